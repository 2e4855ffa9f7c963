"""Checkpoints named by an http(s) URL: a local copy first, else one safe download into a cache.

For ``https://.../<name>`` the first of these that exists is used:

1. ``checkpoints/<name>``, relative to the current directory (where the configs used to point);
2. ``$CONVNEXT_CHECKPOINTS/<name>``, when that variable is set (e.g. a shared folder that
   ``tools/download_weights.py --dir`` filled for machines without internet);
3. ``$CONVNEXT_CACHE/checkpoints/<name>`` (default ``~/.cache/convnext_backbone/checkpoints``;
   ``tools/setup_env.sh`` keeps its wheels in the same ``CONVNEXT_CACHE``);
4. torch.hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints/<name>``), where mmengine's own
   loader (and so MMDetection and MMSegmentation) keeps the release files it downloaded;

and only then is the file downloaded into 3. A download is written to a temporary name in the
same folder and renamed when complete (and, where the server sends ``Content-Length``, of that
size), so an interrupted or partial download is never read as a checkpoint. An exclusive lock on
``<name>.lock`` next to it (``filelock``) makes one process download while the others (ranks of
a distributed run, other jobs on the node) wait and then read its file; the lock needs no
``torch.distributed``, which ``init_weights`` may run before or without.

A file name that carries a sha256 prefix (``NAME-<8 or more hex>.pth``, torch.hub's
``check_hash`` and OpenMMLab's convention, e.g. ``..._20230104-8a798eaf.pth``) is verified: a
download before it is kept, a found copy on its first use (a ``<name>.sha256-ok`` marker next to
it records the size and modification time it was verified at, so a 1 GB file is not hashed at
every use). A mismatch removes the file and raises ``CheckpointError`` naming both hashes.

Like ``torch.hub``, the cache is keyed by file name alone: two URLs with the same last path
component share one cached file. Needs urllib, ``filelock`` and ``tqdm`` (both come with timm's
``huggingface_hub``).
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import os.path as osp
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.client import HTTPException
from typing import IO, Iterator, List, Optional, Tuple

import filelock
import torch.hub
from mmengine.logging import print_log
from tqdm import tqdm

from ..errors import CheckpointError

# Where the configs have always pointed, relative to the current directory.
LOCAL_DIR = 'checkpoints'
# A folder of checkpoints prepared for machines without internet.
CHECKPOINTS_ENV = 'CONVNEXT_CHECKPOINTS'
# The package's cache root (tools/setup_env.sh keeps its mmcv wheel there too).
CACHE_ENV = 'CONVNEXT_CACHE'
DEFAULT_CACHE = osp.join('~', '.cache', 'convnext_backbone')
# Seconds without progress (connecting, or between two reads) before a download gives up.
DEFAULT_TIMEOUT = 60.0
CHUNK_BYTES = 1 << 20
# Temporary downloads are <name>.part-<pid>-<random>: unique per attempt, never a checkpoint name.
PART_SUFFIX = '.part-'
# torch.hub's HASH_REGEX, held to 8 or more digits: the sha256 prefix in a published file name.
HASH_REGEX = re.compile(r'-([a-f0-9]{8,})\.')
VERIFIED_SUFFIX = '.sha256-ok'


def is_url(source: str) -> bool:
    """Whether ``source`` is an http(s) URL (the sources this module resolves)."""
    return source.startswith(('http://', 'https://'))


def file_name_of(url: str) -> str:
    """The file name a URL's checkpoint has on disk: the last component of its path."""
    name = osp.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    if not name or name in ('.', '..'):
        raise CheckpointError(f'Cannot tell the checkpoint file name from the URL {url}: its path '
                              'must end with a file name, e.g. https://host/convnext_tiny.pth')
    return name


def cache_dir() -> str:
    """The download cache: ``$CONVNEXT_CACHE/checkpoints`` (default
    ``~/.cache/convnext_backbone/checkpoints``)."""
    root = os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return osp.join(osp.expanduser(root), 'checkpoints')


def torch_hub_dir() -> str:
    """torch.hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), where mmengine's loader
    keeps what it downloaded."""
    return osp.join(torch.hub.get_dir(), 'checkpoints')


def lookup_paths(url: str) -> List[str]:
    """Where the checkpoint of ``url`` is looked for, in order: ``checkpoints/<name>``,
    ``$CONVNEXT_CHECKPOINTS/<name>`` (when set), the cache, torch.hub's checkpoint folder."""
    name = file_name_of(url)
    folders = [LOCAL_DIR]
    if os.environ.get(CHECKPOINTS_ENV):
        folders.append(osp.expanduser(os.environ[CHECKPOINTS_ENV]))
    folders += [cache_dir(), torch_hub_dir()]
    return [osp.join(folder, name) for folder in folders]


def find_checkpoint(url: str) -> Optional[str]:
    """The first existing file of ``lookup_paths(url)``; None when there is none."""
    return next((path for path in lookup_paths(url) if osp.isfile(path)), None)


def checkpoint_path(url: str,
                    progress: Optional[bool] = None,
                    timeout: float = DEFAULT_TIMEOUT) -> str:
    """The local file of the checkpoint at ``url``: found (see ``lookup_paths``) or downloaded
    into the cache.

    Args:
        url (str): http(s) URL of the checkpoint file.
        progress (bool, optional): Show a progress bar on stderr while downloading. None: only
            when stderr is a terminal.
        timeout (float): Seconds without progress before a download gives up.
    """
    path = find_checkpoint(url)
    if path is not None:
        print_log(f'{url}: using {path}', logger='current')
        _verify_once(url, path)
        return path
    return download_checkpoint(url, cache_dir(), progress=progress, timeout=timeout)[0]


def download_checkpoint(url: str,
                        folder: str,
                        progress: Optional[bool] = None,
                        timeout: float = DEFAULT_TIMEOUT) -> Tuple[str, bool]:
    """Download ``url`` into ``folder/<name>`` unless that file exists; one process at a time.

    Returns the path and whether this call downloaded it (False: it was there, or another
    process finished it while this one waited for the lock).

    Args:
        url (str): http(s) URL of the checkpoint file.
        folder (str): Where the file goes (created if needed).
        progress (bool, optional): Show a progress bar on stderr. None: only when stderr is a
            terminal.
        timeout (float): Seconds without progress before the download gives up.
    """
    path = osp.join(folder, file_name_of(url))
    if osp.isfile(path):
        return path, False
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f'Cannot create the folder {folder} to download {url} into: {exc}. '
                              f'Set {CACHE_ENV} to a writable folder.') from exc
    with _exclusive_lock(path + '.lock', url):
        if osp.isfile(path):  # another process downloaded it while this one waited
            print_log(f'{url}: using {path}, downloaded by another process', logger='current')
            return path, False
        # Holding the lock, no other download of this file is running: parts left here were
        # left by killed ones.
        for stale in glob.glob(glob.escape(path) + PART_SUFFIX + '*'):
            _remove(stale)
        _download(url, path, progress=progress, timeout=timeout)
    return path, True


@contextlib.contextmanager
def _exclusive_lock(lock_path: str, url: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (``filelock``: ``flock`` on POSIX, per open
    file, so it excludes other processes and threads alike). The lock file stays."""
    lock = filelock.FileLock(lock_path)
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            print_log(f'{url}: waiting for another process that is downloading it '
                      f'(lock {lock_path})', logger='current')
            lock.acquire()
    except NotImplementedError as exc:
        # Some network file systems have no locks: still safe, since the rename is atomic, but
        # processes may download the same file side by side.
        print_log(f'Cannot lock {lock_path} ({exc}); downloading without a lock',
                  logger='current', level=logging.WARNING)
        yield
        return
    except OSError as exc:
        raise CheckpointError(f'Cannot write in {osp.dirname(lock_path)} to download {url} '
                              f'there: {exc}. Set {CACHE_ENV} to a writable folder.') from exc
    try:
        yield
    finally:
        lock.release()


def _download(url: str, path: str, progress: Optional[bool], timeout: float) -> None:
    """Download ``url`` to ``path``: into a temporary file next to it, renamed when complete;
    on any failure the temporary file is removed and ``CheckpointError`` says why."""
    response = _open(url, timeout)
    part = f'{path}{PART_SUFFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}'
    try:
        with response:
            expected = _content_length(response)
            print_log(f'Downloading {url} to {path}' +
                      (f' ({_megabytes(expected)})' if expected else ''), logger='current')
            if progress is None:
                progress = sys.stderr.isatty()
            with open(part, 'wb') as f:
                received = _copy(response, f, expected, osp.basename(path) if progress else None,
                                 url)
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename makes it visible
        if expected is not None and received != expected:
            raise CheckpointError(
                f'Download of {url} is incomplete: {received} of {expected} bytes (the '
                'connection closed early); nothing was kept, run again to retry')
        check_hash(url, part, what=f'The download of {url}')
        os.replace(part, path)  # atomic: readers see the whole file or none
        _mark_verified(url, path)
    except OSError as exc:  # writing here (reading the network raises CheckpointError)
        raise CheckpointError(f'Cannot write the download of {url} to {part}: {exc}; nothing '
                              'was kept') from exc
    finally:
        _remove(part)
    print_log(f'Downloaded {url} to {path} ({_megabytes(received)})', logger='current')


def _open(url: str, timeout: float):
    """The server's response to a GET of ``url``, or ``CheckpointError``: with the HTTP status,
    or, when the server cannot be reached, with the local paths where the file can be put."""
    request = urllib.request.Request(url, headers={'User-Agent': 'convnext_backbone'})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise CheckpointError(f'Cannot download {url}: the server answered HTTP {exc.code} '
                              f'{exc.reason}') from exc
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        # Connection refused, DNS failure, timeout: most likely no network on this machine.
        reason = getattr(exc, 'reason', exc)
        raise CheckpointError(
            f'Cannot download {url} ({reason}): no network here? Put the file at one of '
            f'{", ".join(_describe_lookup(url))}; tools/download_weights.py fetches it on a '
            'machine with internet.') from exc


def _describe_lookup(url: str) -> List[str]:
    paths = lookup_paths(url)
    described = [f'{paths[0]} (in the current directory, {osp.abspath(paths[0])})']
    if os.environ.get(CHECKPOINTS_ENV):
        described.append(f'{paths[1]} (${CHECKPOINTS_ENV})')
    else:
        described.append(f'${CHECKPOINTS_ENV}/{file_name_of(url)} (set {CHECKPOINTS_ENV} to a '
                         'folder)')
    described.append(f'{paths[-2]} (the cache, ${CACHE_ENV}/checkpoints)')
    described.append(f'{paths[-1]} (torch.hub\'s checkpoints, where MMDetection keeps its)')
    return described


def _content_length(response) -> Optional[int]:
    value = response.headers.get('Content-Length')
    return int(value) if value is not None and value.strip().isdigit() else None


def _copy(response, f: IO[bytes], expected: Optional[int], bar_name: Optional[str],
          url: str) -> int:
    """Copy the response body into ``f``; returns the bytes received. A connection that fails
    midway (reset, timeout, broken chunking) is a ``CheckpointError``; write errors pass."""
    received = 0
    with tqdm(total=expected, desc=bar_name, unit='B', unit_scale=True, file=sys.stderr,
              disable=bar_name is None) as bar:
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except (OSError, HTTPException) as exc:
                of = f' of {expected}' if expected else ''
                raise CheckpointError(
                    f'Download of {url} was interrupted after {received}{of} bytes ({exc!r}); '
                    'nothing was kept, run again to retry') from exc
            if not chunk:
                break
            f.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received


def expected_hash(url: str) -> Optional[str]:
    """The sha256 prefix that the URL's file name carries (``NAME-<hex>.pth``), or None."""
    match = HASH_REGEX.search(file_name_of(url))
    return match.group(1) if match else None


def check_hash(url: str, path: str, what: Optional[str] = None) -> None:
    """Refuse ``path`` (removed) unless its sha256 starts with the prefix the URL's file name
    carries; nothing to check for a name without one. ``what`` names the file in the error
    (default: its path; a download's temporary path would mean nothing to the user)."""
    prefix = expected_hash(url)
    if prefix is None:
        return
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b''):
            digest.update(chunk)
    actual = digest.hexdigest()
    if not actual.startswith(prefix):
        _remove(path)
        raise CheckpointError(
            f'{what or f"{path} (of {url})"} has sha256 {actual}, but its name says it starts '
            f'with {prefix}: a corrupt or different file; it was removed, run again to '
            'download it anew')


def _verify_once(url: str, path: str) -> None:
    """``check_hash`` on a found copy, unless its marker says this size and mtime passed."""
    if expected_hash(url) is None:
        return
    with contextlib.suppress(OSError):
        with open(path + VERIFIED_SUFFIX) as f:
            if f.read() == _stamp(path):
                return
    check_hash(url, path)
    _mark_verified(url, path)


def _stamp(path: str) -> str:
    stat = os.stat(path)
    return f'{stat.st_size} {stat.st_mtime_ns}'


def _mark_verified(url: str, path: str) -> None:
    """Record that ``path`` passed ``check_hash`` at its present size and mtime."""
    if expected_hash(url) is None:
        return
    marker = path + VERIFIED_SUFFIX
    try:
        with open(marker, 'w') as f:
            f.write(_stamp(path))
    except OSError as exc:  # a read-only shared folder: verified again at the next use
        print_log(f'Cannot write {marker} ({exc}): {path} is verified at every use',
                  logger='current', level=logging.WARNING)


def _megabytes(size: int) -> str:
    return f'{size / 1e6:.1f} MB'


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
