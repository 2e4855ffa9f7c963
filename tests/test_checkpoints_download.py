"""Checkpoints named by URL, without internet: a small HTTP server on 127.0.0.1 serves generated
official-layout checkpoints; local copies, the cache, safe and single downloads, clear errors."""
import io
import multiprocessing
import os
import os.path as osp
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from convnext_backbone import ConvNeXt
from convnext_backbone.checkpoints import CheckpointError, read_checkpoint
from convnext_backbone.checkpoints.download import checkpoint_path

from .helpers import load_tool, randomize_

NAME = 'convnext_atto_1k_224.pth'


def official_checkpoint(seed: int) -> dict:
    """A ConvNeXt-atto ImageNet checkpoint as the official release stores it (``model``, with
    the classifier's final norm and head, no dense output norms), random values per seed."""
    torch.manual_seed(seed)
    state = randomize_(ConvNeXt('atto')).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(('norm0', 'norm1', 'norm2',
                                                                 'norm3'))}
    state.update({'norm.weight': torch.rand(320), 'norm.bias': torch.rand(320),
                  'head.weight': torch.randn(1000, 320), 'head.bias': torch.randn(1000)})
    return {'model': state}


def serialize(checkpoint: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


class Server:
    """Serves ``files`` (path -> bytes) on 127.0.0.1 and counts requests per path. ``mode``:
    ``'ok'``; ``'drop'`` (announce the whole size, send half, close); ``'slow'`` (send the
    body in ten parts, 0.1 s apart). Unknown paths: 404."""

    def __init__(self, files: dict) -> None:
        self.files, self.mode, self.requests = files, 'ok', {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests[self.path] = server.requests.get(self.path, 0) + 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, 'Not Found')
                    return
                self.send_response(200)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                if server.mode == 'drop':
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                parts = 10 if server.mode == 'slow' else 1
                step = -(-len(body) // parts)
                for start in range(0, len(body), step):
                    self.wfile.write(body[start:start + step])
                    if server.mode == 'slow':
                        time.sleep(0.1)

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f'http://127.0.0.1:{self.httpd.server_address[1]}/{path}'

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A working directory and a cache under tmp_path; no CONVNEXT_CHECKPOINTS, no proxy."""
    work, cache = tmp_path / 'work', tmp_path / 'cache'
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv('CONVNEXT_CACHE', str(cache))
    monkeypatch.delenv('CONVNEXT_CHECKPOINTS', raising=False)
    for var in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy',
                'ALL_PROXY'):
        monkeypatch.delenv(var, raising=False)
    return work, cache / 'checkpoints'


@pytest.fixture
def server():
    server = Server({f'/{NAME}': serialize(official_checkpoint(seed=1))})
    yield server
    server.stop()


def assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def cache_listing(cache) -> list:
    return sorted(os.listdir(cache)) if osp.isdir(cache) else []


def test_download_once_then_read_the_cache_offline(env, server):
    _, cache = env
    url, expected = server.url(NAME), official_checkpoint(seed=1)['model']
    assert_same(read_checkpoint(url)['model'], expected)
    assert server.requests == {f'/{NAME}': 1}
    assert cache_listing(cache) == [NAME, NAME + '.lock']  # no temporary file left
    server.stop()  # the second use needs no server
    assert_same(read_checkpoint(url)['model'], expected)
    assert server.requests == {f'/{NAME}': 1}


def test_backbone_loads_downloaded_weights_exactly(env, server):
    model = ConvNeXt('atto', init_cfg=dict(type='Pretrained', checkpoint=server.url(NAME)))
    model.init_weights()
    expected = official_checkpoint(seed=1)['model']
    state = model.state_dict()
    for key, value in expected.items():
        if not key.startswith(('head.', 'norm.')):  # the classifier: not part of a backbone
            torch.testing.assert_close(state[key], value, rtol=0, atol=0)


def test_local_copy_then_env_folder_then_cache(env, server, tmp_path, monkeypatch):
    work, cache = env
    url = server.url(NAME)
    read_checkpoint(url)  # fills the cache with seed 1
    shared = tmp_path / 'shared'
    shared.mkdir()
    torch.save(official_checkpoint(seed=2), shared / NAME)
    monkeypatch.setenv('CONVNEXT_CHECKPOINTS', str(shared))
    (work / 'checkpoints').mkdir()
    torch.save(official_checkpoint(seed=3), work / 'checkpoints' / NAME)

    assert checkpoint_path(url) == osp.join('checkpoints', NAME)
    assert_same(read_checkpoint(url)['model'], official_checkpoint(seed=3)['model'])
    os.remove(work / 'checkpoints' / NAME)
    assert_same(read_checkpoint(url)['model'], official_checkpoint(seed=2)['model'])
    os.remove(shared / NAME)
    assert_same(read_checkpoint(url)['model'], official_checkpoint(seed=1)['model'])
    assert server.requests == {f'/{NAME}': 1}  # the copies were used, not the network


def test_torch_hub_checkpoint_folder_is_used_before_downloading(env, server, tmp_path,
                                                                monkeypatch):
    """Where mmengine's loader (and so MMDetection's users) already keeps release files."""
    _, cache = env
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    hub = tmp_path / 'torch' / 'hub' / 'checkpoints'
    hub.mkdir(parents=True)
    torch.save(official_checkpoint(seed=4), hub / NAME)
    url = server.url(NAME)
    assert checkpoint_path(url) == str(hub / NAME)
    assert_same(read_checkpoint(url)['model'], official_checkpoint(seed=4)['model'])
    assert server.requests == {} and cache_listing(cache) == []  # nothing downloaded


def test_dropped_connection_leaves_nothing_behind(env, server):
    _, cache = env
    url = server.url(NAME)
    server.mode = 'drop'
    with pytest.raises(CheckpointError, match=rf'Download of {url} (is incomplete|was '
                       r'interrupted).*nothing was kept'):
        read_checkpoint(url)
    assert cache_listing(cache) == [NAME + '.lock']  # neither the file nor a temporary one
    # What a killed download (no chance to clean up) leaves: the next download removes it.
    (cache / f'{NAME}.part-12345-0badf00d').write_bytes(b'half a checkpoint')
    server.mode = 'ok'  # the next run downloads it whole
    assert_same(read_checkpoint(url)['model'], official_checkpoint(seed=1)['model'])
    assert cache_listing(cache) == [NAME, NAME + '.lock']


def test_http_error_names_url_and_status(env, server):
    url = server.url('missing.pth')
    with pytest.raises(CheckpointError, match=rf'Cannot download {url}: the server answered '
                       r'HTTP 404'):
        read_checkpoint(url)
    assert cache_listing(env[1]) == ['missing.pth.lock']


def test_no_network_says_where_to_put_the_file(env, monkeypatch, tmp_path):
    _, cache = env
    with socket.socket() as s:  # a port that nothing listens on: connection refused
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    url = f'http://127.0.0.1:{port}/{NAME}'
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(url)
    message = str(error.value)
    assert message.startswith(f'Cannot download {url} (')
    assert f'checkpoints/{NAME} (in the current directory' in message
    assert f'$CONVNEXT_CHECKPOINTS/{NAME}' in message
    assert osp.join(str(cache), NAME) in message
    assert 'tools/download_weights.py' in message
    monkeypatch.setenv('CONVNEXT_CHECKPOINTS', str(tmp_path / 'shared'))
    with pytest.raises(CheckpointError, match=str(tmp_path / 'shared' / NAME)):
        read_checkpoint(url)


def test_file_that_is_not_a_checkpoint_says_which_file(env):
    work, _ = env
    (work / 'checkpoints').mkdir()
    (work / 'checkpoints' / NAME).write_bytes(b'<html>not a checkpoint</html>')
    url = f'http://127.0.0.1:1/{NAME}'  # never contacted: the local copy is used
    with pytest.raises(CheckpointError, match=rf'checkpoints/{NAME} was used for {url}: '
                       'replace it'):
        read_checkpoint(url)


def _fetch_in_child(url, start, paths):
    start.wait()  # both processes ask at the same moment
    paths.put(checkpoint_path(url))


def test_two_processes_download_once(env, server):
    _, cache = env
    server.mode = 'slow'  # one second of transfer: the second process asks meanwhile
    url = server.url(NAME)
    context = multiprocessing.get_context('spawn')  # no fork of this process's server thread
    start, paths = context.Barrier(2), context.Queue()
    children = [context.Process(target=_fetch_in_child, args=(url, start, paths))
                for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0]
    assert [paths.get(timeout=1) for _ in children] == [osp.join(str(cache), NAME)] * 2
    assert server.requests == {f'/{NAME}': 1}
    assert cache_listing(cache) == [NAME, NAME + '.lock']
    assert_same(read_checkpoint(url)['model'], official_checkpoint(seed=1)['model'])


# ----------------------------------------------------------------- tools/download_weights.py
def _tool():
    return load_tool('download_weights')


def test_download_weights_tool(env, server, tmp_path, capsys):
    _, cache = env
    url = server.url(NAME)
    config = tmp_path / 'tiny_config.py'
    config.write_text('model = dict(backbone=dict(init_cfg=dict(type=\'Pretrained\', '
                      f'checkpoint=\'{url}\')))\n')
    scratch = tmp_path / 'scratch_config.py'
    scratch.write_text('model = dict(backbone=dict(init_cfg=None))\n')
    tool = _tool()
    folder = tmp_path / 'offline'

    assert tool.main([str(config), str(scratch), '--dir', str(folder), '--dry-run']) == 0
    assert f'would download to {folder / NAME}' in capsys.readouterr().out
    assert not folder.exists() and server.requests == {}
    assert tool.main([str(config), str(scratch), '--dir', str(folder)]) == 0
    out = capsys.readouterr().out
    assert f'{url} (tiny_config.py)\n  downloaded: {folder / NAME}' in out
    assert 'scratch_config.py: no ImageNet checkpoint URL' in out
    assert 'set CONVNEXT_CHECKPOINTS' in out
    assert tool.main([str(config), '--dir', str(folder)]) == 0
    assert f'already there: {folder / NAME}' in capsys.readouterr().out
    assert_same(torch.load(folder / NAME)['model'], official_checkpoint(seed=1)['model'])
    # Without --dir: into the cache, where training looks.
    assert tool.main([str(config)]) == 0
    assert f'downloaded: {cache / NAME}' in capsys.readouterr().out
    assert server.requests == {f'/{NAME}': 2}
    server.stop()
    with pytest.raises(CheckpointError, match=r'1 checkpoint\(s\) could not be fetched'):
        tool.main([str(config), '--dir', str(tmp_path / 'elsewhere')])
    assert 'FAILED: Cannot download' in capsys.readouterr().out


def test_download_weights_tool_knows_every_paper_config(env, capsys):
    assert _tool().main(['--all', '--dry-run']) == 0
    out = capsys.readouterr().out
    names = ['convnext_tiny_1k_224.pth', 'convnext_small_1k_224.pth', 'convnext_base_1k_224.pth',
             'convnext_base_22k_224.pth', 'convnext_large_22k_224.pth',
             'convnext_xlarge_22k_224.pth', 'convnextv2/im1k/convnextv2_tiny_1k_224_ema.pt',
             # The field's configs: DINO, RTMDet, V2-B's LSJ Mask R-CNN from FCMAE.
             'convnext_tiny_22k_1k_384.pth', 'convnext_base_22k_1k_384.pth',
             'convnextv2/pt_only/convnextv2_base_1k_224_fcmae.pt']
    for name in names:
        assert f'https://dl.fbaipublicfiles.com/convnext/{name} (' in out
    assert out.count(f'would download to {env[1]}{os.sep}') == len(names)
    # Each with its terms: the V2 weights' non-commercial licence, the V1 weights' MIT.
    v2 = out.split('convnextv2_tiny_1k_224_ema.pt (', 1)[1].split('\nhttp', 1)[0]
    assert 'licence: CC-BY-NC 4.0: non-commercial use only' in v2
    fcmae = out.split('convnextv2_base_1k_224_fcmae.pt (', 1)[1].split('\nhttp', 1)[0]
    assert 'licence: CC-BY-NC 4.0: non-commercial use only' in fcmae
    v1 = out.split('convnext_tiny_1k_224.pth (', 1)[1].split('\nhttp', 1)[0]
    assert 'licence: MIT (facebookresearch/ConvNeXt)' in v1


def test_hash_in_the_file_name_is_checked_after_download_and_on_first_cached_use(env, server,
                                                                               monkeypatch):
    import hashlib
    from convnext_backbone.checkpoints import download
    _, cache = env
    body = serialize(official_checkpoint(seed=2))
    good = f'convnext_atto-{hashlib.sha256(body).hexdigest()[:8]}.pth'
    bad = 'convnext_atto_20230104-8a798eaf.pth'
    server.files.update({f'/{good}': body, f'/{bad}': body})
    assert_same(read_checkpoint(server.url(good))['model'], official_checkpoint(seed=2)['model'])
    with pytest.raises(CheckpointError, match=rf'^The download of \S+/{bad} has sha256 '
                       f'{hashlib.sha256(body).hexdigest()}.*starts with 8a798eaf'):
        checkpoint_path(server.url(bad))
    assert not osp.exists(cache / bad)  # nothing of it kept
    # A copy put in the cache by hand is hashed once, on its first use, then trusted.
    (cache / bad).write_bytes(b'not the published file')
    with pytest.raises(CheckpointError, match='8a798eaf.*removed'):
        checkpoint_path(server.url(bad))
    assert not osp.exists(cache / bad)
    hashed = []
    monkeypatch.setattr(download, 'check_hash', lambda url, path, what=None: hashed.append(path))
    for _ in range(2):
        checkpoint_path(server.url(good))
    assert hashed == []  # verified when downloaded: its marker stands
    (cache / good).write_bytes(body + b'x')  # changed since: hashed again
    checkpoint_path(server.url(good))
    assert hashed == [str(cache / good)]


def test_weights_licence_by_url():
    from convnext_backbone.checkpoints.licences import V1_TERMS, V2_TERMS, weights_licence
    fb = 'https://dl.fbaipublicfiles.com/convnext/'
    for url in (f'{fb}convnextv2/pt_only/convnextv2_base_1k_224_fcmae.pt',
                f'{fb}convnextv2/im22k/convnextv2_large_22k_384_ema.pt',
                'https://download.openmmlab.com/mmclassification/v0/convnext-v2/'
                'convnext-v2-base_3rdparty-fcmae_in1k_20230104-8a798eaf.pth',
                'https://huggingface.co/timm/convnextv2_atto.fcmae/resolve/main/model.safetensors'):
        assert weights_licence(url) == V2_TERMS, url
    assert weights_licence(f'{fb}convnext_tiny_22k_1k_384.pth') == V1_TERMS
    assert weights_licence('https://example.org/convnext_tiny_1k_224.pth') is None
