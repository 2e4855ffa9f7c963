"""Loading published checkpoints: every layout, made with the peers' own model code."""
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file

from convnext_backbone import ConvNeXt
from convnext_backbone.checkpoints import CheckpointError
from convnext_backbone.checkpoints.imagenet import (convert_state_dict, detect_layout,
                                                    from_mmpretrain, from_timm,
                                                    from_transformers, load_pretrained, to_timm)

from .helpers import randomize_

X = torch.randn(1, 3, 96, 64, generator=torch.Generator().manual_seed(1))
NORM_KEYS = [f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias')]


def _assert_features_equal(model, features, norms_from_model=True):
    """``features``: the peer's raw stage outputs; ours pass through our per-stage norms."""
    model.eval()
    with torch.no_grad():
        ours = model(X)
        for i, (a, b) in enumerate(zip(ours, features)):
            if norms_from_model:
                b = getattr(model, f'norm{i}')(b)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _timm_peer(name):
    peer = randomize_(timm.create_model(name, pretrained=False)).eval()
    with torch.no_grad():
        features = peer.forward_intermediates(X, intermediates_only=True)
    return peer, features


def _official_names_from_timm(depths):
    """The official key for each timm key, written out independently of the converter."""
    names = {'stem.0': 'downsample_layers.0.0', 'stem.1': 'downsample_layers.0.1',
             'head.norm': 'norm', 'head.fc': 'head'}
    for i, depth in enumerate(depths):
        if i:
            names[f'stages.{i}.downsample.0'] = f'downsample_layers.{i}.0'
            names[f'stages.{i}.downsample.1'] = f'downsample_layers.{i}.1'
        for j in range(depth):
            t, o = f'stages.{i}.blocks.{j}', f'stages.{i}.{j}'
            names.update({f'{t}.conv_dw': f'{o}.dwconv', f'{t}.norm': f'{o}.norm',
                          f'{t}.mlp.fc1': f'{o}.pwconv1', f'{t}.mlp.fc2': f'{o}.pwconv2',
                          f'{t}.gamma': f'{o}.gamma', f'{t}.mlp.grn': f'{o}.grn'})
    return names


def _to_official(timm_sd, depths):
    names = _official_names_from_timm(depths)
    out = {}
    for key, value in timm_sd.items():
        module, _, leaf = key.rpartition('.')
        if key.endswith('.gamma'):
            module, leaf = key, None
        new = names[module] if leaf is None else f'{names[module]}.{leaf}'
        if '.grn.' in new:  # official GRN: gamma/beta shaped (1, 1, 1, C)
            new = new.replace('grn.weight', 'grn.gamma').replace('grn.bias', 'grn.beta')
            value = value.reshape(1, 1, 1, -1)
        if value.dim() == 4 and ('pwconv' in new):
            value = value.flatten(1)
        out[new] = value
    return out


@pytest.mark.parametrize('name,arch,version', [('convnext_atto', 'atto', 'v1'),
                                               ('convnextv2_atto', 'atto', 'v2'),
                                               ('convnext_tiny', 'tiny', 'v1')])
@pytest.mark.parametrize('suffix', ['.pth', '.bin', '.safetensors'])
def test_timm_layout(tmp_path, name, arch, version, suffix):
    peer, features = _timm_peer(name)
    path = str(tmp_path / f'timm{suffix}')
    if suffix == '.safetensors':
        save_file({k: v.contiguous() for k, v in peer.state_dict().items()}, path)
    else:
        torch.save(peer.state_dict(), path)
    model = ConvNeXt(arch, version=version, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    _assert_features_equal(model, features)


@pytest.mark.parametrize('name,arch,version', [('convnext_atto', 'atto', 'v1'),
                                               ('convnextv2_atto', 'atto', 'v2')])
def test_official_layout_with_22k_head_and_ema(tmp_path, name, arch, version):
    peer, features = _timm_peer(name)
    official = _to_official(peer.state_dict(), peer_depths := (2, 2, 6, 2))
    assert peer_depths == ConvNeXt(arch).depths
    # A 22k classifier head, and an EMA copy with other values.
    official['head.weight'] = torch.randn(21841, official['norm.weight'].shape[0])
    official['head.bias'] = torch.zeros(21841)
    ema = {k: v + 1 for k, v in official.items()}
    path = tmp_path / 'convnext_22k.pth'
    torch.save({'model': official, 'model_ema': ema, 'epoch': 90}, path)
    model = ConvNeXt(arch, version=version)
    report = load_pretrained(model, str(path))
    _assert_features_equal(model, features)
    assert report.layout == 'official'
    assert sorted(report.missing) == sorted(NORM_KEYS)
    assert sorted(report.unused) == ['head.bias', 'head.weight', 'norm.bias', 'norm.weight']
    assert len(report.loaded) == len(official) - 4
    text = str(report)
    assert f'{len(official) - 4} tensors loaded' in text and 'head.{weight,bias}' in text
    load_pretrained(model, str(path), use_ema=True)
    torch.testing.assert_close(model.stages[0][0].dwconv.weight,
                               ema['stages.0.0.dwconv.weight'])


@pytest.mark.parametrize('version', ['v1', 'v2'])
@pytest.mark.parametrize('prefix', ['', 'convnext.'])
def test_transformers_layout(tmp_path, version, prefix):
    import transformers
    if version == 'v1':
        config = transformers.ConvNextConfig(depths=[2, 2, 6, 2], hidden_sizes=[40, 80, 160, 320])
        peer = transformers.ConvNextModel(config)
    else:
        config = transformers.ConvNextV2Config(depths=[2, 2, 6, 2],
                                               hidden_sizes=[40, 80, 160, 320])
        peer = transformers.ConvNextV2Model(config)
        prefix = prefix.replace('convnext.', 'convnextv2.')
    randomize_(peer).eval()
    with torch.no_grad():
        features = peer(X, output_hidden_states=True).hidden_states[1:]
    path = tmp_path / 'model.safetensors'
    save_file({prefix + k: v.contiguous() for k, v in peer.state_dict().items()}, str(path))
    model = ConvNeXt('atto', version=version,
                     init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    _assert_features_equal(model, features)


@pytest.mark.parametrize('version', ['v1', 'v2'])
def test_mmpretrain_layout(tmp_path, version):
    from mmpretrain.models.backbones import ConvNeXt as PretrainConvNeXt
    kwargs = dict(use_grn=True, layer_scale_init_value=0.) if version == 'v2' else {}
    peer = PretrainConvNeXt(arch='atto', out_indices=(0, 1, 2, 3), gap_before_final_norm=False,
                            **kwargs)
    randomize_(peer).eval()
    with torch.no_grad():
        features = peer(X)  # through its own per-stage norms
    dense = {f'backbone.{k}': v for k, v in peer.state_dict().items()}
    torch.save({'state_dict': dense, 'meta': {}}, tmp_path / 'dense.pth')
    model = ConvNeXt('atto', version=version)
    report = load_pretrained(model, str(tmp_path / 'dense.pth'))
    assert not report.missing and not report.unused
    _assert_features_equal(model, features, norms_from_model=False)
    # Its classifier checkpoints hold only norm3: the final norm, not a dense output norm.
    classifier = {k: v for k, v in dense.items() if not k.startswith(('backbone.norm0',
                                                                      'backbone.norm1',
                                                                      'backbone.norm2'))}
    classifier['head.fc.weight'] = torch.randn(1000, 320)
    classifier['head.fc.bias'] = torch.randn(1000)
    converted, layout = convert_state_dict(classifier)
    assert layout == 'mmpretrain' and 'norm.weight' in converted and 'head.weight' in converted
    report = load_pretrained(ConvNeXt('atto', version=version), _save(tmp_path, classifier))
    assert sorted(report.missing) == sorted(NORM_KEYS)


def _save(tmp_path, state_dict, name='ckpt.pth'):
    path = str(tmp_path / name)
    torch.save(state_dict, path)
    return path


def test_detector_checkpoint_with_prefix(tmp_path):
    source = randomize_(ConvNeXt('atto'))
    detector = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    detector['neck.lateral_convs.0.conv.weight'] = torch.randn(8, 40, 1, 1)
    path = _save(tmp_path, {'state_dict': detector, 'meta': {'epoch': 3}})
    for prefix in ('backbone.', None):  # None: detected from the keys
        model = ConvNeXt('atto')
        cfg = dict(type='Pretrained', checkpoint=path)
        if prefix:
            cfg['prefix'] = prefix
        model.init_cfg = cfg
        model.init_weights()
        for key, value in source.state_dict().items():
            torch.testing.assert_close(model.state_dict()[key], value)


def test_converters_refuse_a_layout_they_do_not_convert():
    official = ConvNeXt('atto', version='v2').state_dict()
    for convert, layout in ((from_timm, 'timm'), (from_mmpretrain, 'mmpretrain'),
                            (from_transformers, 'transformers')):
        with pytest.raises(CheckpointError, match=f'Expected a {layout}-layout ConvNeXt state '
                           'dict, got one of the official layout'):
            convert(official)
    assert convert_state_dict(official) == (official, 'official')


@pytest.mark.parametrize('source', ['timm', 'official', 'detector'])
def test_init_cfg_list_loads_every_pretrained_entry_exactly(tmp_path, source):
    """A list-form init_cfg (as mmengine allows) goes through the exact loader too, after the
    other entries (mmengine's order): before, mmengine's PretrainedInit loaded a timm file with
    strict=False, matched no key and left the backbone random."""
    ours = randomize_(ConvNeXt('atto'))
    if source == 'timm':
        peer = timm.create_model('convnext_atto', pretrained=False)
        peer.load_state_dict(to_timm({k: v for k, v in ours.state_dict().items()
                                      if not k.startswith('norm')}, conv_mlp=True), strict=False)
        path, prefix = _save(tmp_path, peer.state_dict()), None
    elif source == 'official':
        path, prefix = _save(tmp_path, {'model': ours.state_dict()}), None
    else:  # a whole detector, with the prefix given explicitly
        detector = {f'backbone.{k}': v for k, v in ours.state_dict().items()}
        detector['neck.conv.weight'] = torch.randn(8, 40, 1, 1)
        path, prefix = _save(tmp_path, {'state_dict': detector}), 'backbone.'
    pretrained = dict(type='Pretrained', checkpoint=path, prefix=prefix)
    constant = dict(type='Constant', layer='LayerNorm', val=3.0)  # mmengine's, applied first
    model = ConvNeXt('atto', init_cfg=[constant, pretrained])
    model.init_weights()
    loaded = [k for k in model.state_dict() if source != 'timm' or not k.startswith('norm')]
    for key in loaded:
        torch.testing.assert_close(model.state_dict()[key], ours.state_dict()[key], msg=key)
    if source == 'timm':  # the dense output norms are not in an ImageNet file: mmengine's init
        assert torch.all(model.norm0.weight == 3.0)


def test_init_cfg_list_refuses_as_the_dict_form(tmp_path):
    path = _save(tmp_path, {'model': ConvNeXt('femto').state_dict()})
    model = ConvNeXt('atto', init_cfg=[dict(type='Pretrained', checkpoint=path),
                                       dict(type='Constant', layer='Linear', val=1.0)])
    with pytest.raises(CheckpointError, match='Shape mismatch'):
        model.init_weights()
    with pytest.raises(CheckpointError, match='No key of .* starts with prefix'):
        ConvNeXt('atto', init_cfg=[dict(type='Pretrained', checkpoint=path,
                                        prefix='backbone.')]).init_weights()


def test_convert_weights_tool_round_trip(tmp_path):
    peer, features = _timm_peer('convnextv2_atto')
    src = _save(tmp_path, peer.state_dict(), 'timm.pth')
    for dst in (str(tmp_path / 'out.safetensors'), str(tmp_path / 'out.pth')):
        run = subprocess.run([sys.executable, 'tools/convert_weights.py', src, dst],
                             capture_output=True, text=True, check=True)
        assert 'converted from the timm layout' in run.stdout
        assert 'tensors loaded' in run.stdout
        model = ConvNeXt('atto', version='v2', init_cfg=dict(type='Pretrained', checkpoint=dst))
        model.init_weights()
        _assert_features_equal(model, features)
        assert detect_layout(torch.load(dst)['state_dict'] if dst.endswith('.pth') else
                             __import__('safetensors.torch').torch.load_file(dst)) == 'official'


# --------------------------------------------------------------------------------- bad input
def test_missing_file():
    with pytest.raises(CheckpointError, match='Checkpoint file not found: /nonexistent/x.pth'):
        load_pretrained(ConvNeXt('atto'), '/nonexistent/x.pth')


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_truncated_file(tmp_path, suffix):
    path = str(tmp_path / f'cut{suffix}')
    state = ConvNeXt('atto').state_dict()
    save_file(state, path) if suffix == '.safetensors' else torch.save(state, path)
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=f'Cannot read .*{path}'):
        load_pretrained(ConvNeXt('atto'), path)


def test_not_a_convnext_checkpoint(tmp_path):
    path = _save(tmp_path, {'conv1.weight': torch.randn(64, 3, 7, 7),
                            'fc.weight': torch.randn(2, 2)})
    with pytest.raises(CheckpointError, match=f'{path}: This is not a ConvNeXt checkpoint'):
        load_pretrained(ConvNeXt('atto'), path)


class NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = _save(tmp_path, {'model': ConvNeXt('atto').state_dict(), 'extra': NotATensor()})
    with pytest.raises(CheckpointError, match=f'Refusing to load {path}'):
        load_pretrained(ConvNeXt('atto'), path)


def test_shape_mismatch_names_key_shapes_and_arch(tmp_path):
    path = _save(tmp_path, {'model': ConvNeXt('femto').state_dict()})
    model = ConvNeXt('atto')
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"downsample_layers.0.0.weight: checkpoint "
                       r"\(48, 3, 4, 4\), model \(40, 3, 4, 4\).*ConvNeXt v1 'femto'"):
        load_pretrained(model, path, strict=False)  # shape errors ignore strict
    for key, value in model.state_dict().items():  # nothing was half-loaded
        torch.testing.assert_close(value, before[key])


def test_version_mismatch_is_an_error_unless_opted_out(tmp_path):
    path = _save(tmp_path, {'model': randomize_(ConvNeXt('atto', version='v2')).state_dict()})
    with pytest.raises(CheckpointError, match=r"ConvNeXt v2 'atto' checkpoint.*unexpected: "
                       r'.*grn'):
        load_pretrained(ConvNeXt('atto'), path)
    model = ConvNeXt('atto')
    report = load_pretrained(model, path, strict=False)
    assert any('.grn.' in k for k in report.unused) and any('.gamma' in k for k in report.missing)
    torch.testing.assert_close(model.stages[1][0].pwconv1.weight,
                               torch.load(path)['model']['stages.1.0.pwconv1.weight'])


def test_missing_ema_and_prefix_errors(tmp_path):
    path = _save(tmp_path, {'model': ConvNeXt('atto').state_dict()})
    with pytest.raises(CheckpointError, match='no model_ema'):
        load_pretrained(ConvNeXt('atto'), path, use_ema=True)
    with pytest.raises(CheckpointError, match="No key of .* starts with prefix 'backbone.'"):
        load_pretrained(ConvNeXt('atto'), path, prefix='backbone.')


@pytest.mark.parametrize('name,version', [('convnext_atto', 'v1'), ('convnextv2_atto', 'v2')])
def test_to_timm_and_to_mmpretrain_invert_the_loaders(name, version):
    """Ours -> timm / mmpretrain (how the benchmark gives its peers our weights): the inverses of
    from_timm / from_mmpretrain, which those libraries' own models load key for key."""
    from mmpretrain.models.backbones import ConvNeXt as PretrainConvNeXt

    from convnext_backbone.checkpoints.imagenet import to_mmpretrain

    def equal(a, b):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    model = randomize_(ConvNeXt('atto', version=version)).eval()
    ours = model.state_dict()
    classifier = {k: v for k, v in ours.items() if k not in NORM_KEYS}
    classifier.update({'norm.weight': torch.randn(320), 'norm.bias': torch.randn(320),
                       'head.weight': torch.randn(1000, 320), 'head.bias': torch.randn(1000)})
    for state_dict in (ours, classifier):
        assert equal(from_timm(to_timm(state_dict)), state_dict)
    assert equal(from_mmpretrain(to_mmpretrain(ours), dense=True), ours)
    assert equal(from_mmpretrain(to_mmpretrain(classifier, dense=False), dense=False), classifier)
    with pytest.raises(CheckpointError, match='Expected a timm-layout'):
        from_timm(ours)
    with pytest.raises(CheckpointError, match='Expected a official-layout'):
        to_timm(to_timm(ours))
    # timm's Linear-MLP layout loads as it is; its atto's own 1x1-conv MLP after a reshape.
    linear_mlp = timm.create_model(name, pretrained=False, conv_mlp=False).eval()
    linear_mlp.load_state_dict(to_timm(classifier), strict=True)
    conv_mlp = timm.create_model(name, pretrained=False).eval()
    shapes = {k: v.shape for k, v in conv_mlp.state_dict().items()}
    conv_mlp.load_state_dict({k: v.reshape(shapes[k]) for k, v in to_timm(classifier).items()},
                             strict=True)
    for peer in (linear_mlp, conv_mlp):
        with torch.no_grad():
            _assert_features_equal(model, peer.forward_intermediates(X, intermediates_only=True))
    kwargs = dict(use_grn=True, layer_scale_init_value=0.) if version == 'v2' else {}
    pretrain = PretrainConvNeXt(arch='atto', out_indices=(0, 1, 2, 3),
                                gap_before_final_norm=False, **kwargs)
    pretrain.load_state_dict(to_mmpretrain(ours), strict=True)
    pretrain.eval()  # (its train() returns None: no chaining)
    with torch.no_grad():
        _assert_features_equal(model, pretrain(X), norms_from_model=False)
