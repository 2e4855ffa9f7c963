"""Loading published checkpoints: every layout, made with the peers' own model code."""
import math
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


# ------------------------------------------------------------------------------------ FCMAE
ATTO = dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320))
FCMAE_DECODER = ['proj.weight', 'proj.bias', 'mask_token', 'pred.weight', 'pred.bias'] + [
    f'decoder.0.{m}.{p}' for m in ('dwconv', 'norm', 'pwconv1', 'pwconv2') for p in
    ('weight', 'bias')] + ['decoder.0.grn.gamma', 'decoder.0.grn.beta']


def _fcmae_state_dict(depths, dims, decoder_dim=512, patch=32):
    """A random state dict of ConvNeXt-V2's FCMAE model, key by key as its code defines it
    (models/fcmae.py, models/convnextv2_sparse.py, MinkowskiEngine): ``encoder.`` a sparse
    ConvNeXt-V2 (dense stem; ``kernel`` of (k*k, C_in, C_out) or depthwise (k*k, C) with (1, C)
    biases; LayerNorm as ``.ln``, Linear as ``.linear``; GRN (1, C)), beside the decoder."""
    generator = torch.Generator().manual_seed(7)

    def rand(*shape, fan_in=1):
        return torch.randn(*shape, generator=generator) * 0.5 / math.sqrt(fan_in)

    sd = {'encoder.downsample_layers.0.0.weight': rand(dims[0], 3, 4, 4, fan_in=48),
          'encoder.downsample_layers.0.0.bias': rand(dims[0]),
          'encoder.downsample_layers.0.1.weight': rand(dims[0]),
          'encoder.downsample_layers.0.1.bias': rand(dims[0])}
    for i in range(1, 4):
        p, c_in, c_out = f'encoder.downsample_layers.{i}', dims[i - 1], dims[i]
        sd.update({f'{p}.0.ln.weight': rand(c_in), f'{p}.0.ln.bias': rand(c_in),
                   f'{p}.1.kernel': rand(2 * 2, c_in, c_out, fan_in=4 * c_in),
                   f'{p}.1.bias': rand(1, c_out)})
    for i, (depth, c) in enumerate(zip(depths, dims)):
        for j in range(depth):
            p = f'encoder.stages.{i}.{j}'
            sd.update({f'{p}.dwconv.kernel': rand(7 * 7, c, fan_in=49),
                       f'{p}.dwconv.bias': rand(1, c),
                       f'{p}.norm.ln.weight': rand(c), f'{p}.norm.ln.bias': rand(c),
                       f'{p}.pwconv1.linear.weight': rand(4 * c, c, fan_in=c),
                       f'{p}.pwconv1.linear.bias': rand(4 * c),
                       f'{p}.grn.gamma': rand(1, 4 * c), f'{p}.grn.beta': rand(1, 4 * c),
                       f'{p}.pwconv2.linear.weight': rand(c, 4 * c, fan_in=4 * c),
                       f'{p}.pwconv2.linear.bias': rand(c)})
    d = decoder_dim  # the decoder: one dense ConvNeXt-V2 block between two 1x1 convolutions
    sd.update({'proj.weight': rand(d, dims[-1], 1, 1), 'proj.bias': rand(d),
               'mask_token': rand(1, d, 1, 1),
               'decoder.0.dwconv.weight': rand(d, 1, 7, 7), 'decoder.0.dwconv.bias': rand(d),
               'decoder.0.norm.weight': rand(d), 'decoder.0.norm.bias': rand(d),
               'decoder.0.pwconv1.weight': rand(4 * d, d), 'decoder.0.pwconv1.bias': rand(4 * d),
               'decoder.0.grn.gamma': rand(1, 1, 1, 4 * d),
               'decoder.0.grn.beta': rand(1, 1, 1, 4 * d),
               'decoder.0.pwconv2.weight': rand(d, 4 * d), 'decoder.0.pwconv2.bias': rand(d),
               'pred.weight': rand(patch ** 2 * 3, d, 1, 1), 'pred.bias': rand(patch ** 2 * 3)})
    assert sorted(k for k in sd if not k.startswith('encoder.')) == sorted(FCMAE_DECODER)
    return sd


def _official_rule(fcmae):
    """ConvNeXt-V2's own conversion for fine-tuning, written again from its code: main_finetune.py
    deletes every key naming 'decoder', 'mask_token', 'proj' or 'pred', then
    utils.remap_checkpoint_keys drops 'encoder.'; turns each 'kernel' into a 'weight' by
    permuting (k*k, in, out) to (out, in, k*k) ((k*k, C) to (C, k*k)), reshaping to
    (out, in, k, k) ((C, 1, k, k)) and swapping the last two axes; removes the 'ln' / 'linear'
    name part before the leaf; flattens biases that are not 1-D; reshapes GRN's (1, C) to
    (1, 1, 1, C)."""
    out = {}
    for key, value in fcmae.items():
        if any(word in key for word in ('decoder', 'mask_token', 'proj', 'pred')):
            continue
        key = key.removeprefix('encoder.')
        if key.endswith('.kernel'):
            ks = int(math.sqrt(value.shape[0]))
            if value.dim() == 3:
                weight = value.permute(2, 1, 0).reshape(value.shape[2], value.shape[1], ks, ks)
            else:
                weight = value.permute(1, 0).reshape(value.shape[1], 1, ks, ks)
            out[key[:-len('kernel')] + 'weight'] = weight.transpose(3, 2)
            continue
        parts = key.split('.')
        if parts[-2] in ('ln', 'linear'):
            del parts[-2]
        out['.'.join(parts)] = value
    for key, value in out.items():
        if key.endswith('bias') and value.dim() != 1:
            out[key] = value.reshape(-1)
        elif 'grn' in key:
            out[key] = value.unsqueeze(0).unsqueeze(1)
    return out


def test_fcmae_checkpoint_loads_as_the_official_rule_converts_it(tmp_path):
    """The FCMAE pre-training layout: converted as ConvNeXt-V2's remap_checkpoint_keys converts
    it, tensor for tensor, and the backbone then computes what timm's ConvNeXt-V2 computes with
    the official conversion put through timm's own checkpoint filter. The decoder is named as not
    used, the per-stage output norms as kept at their initialisation."""
    from timm.models.convnext import checkpoint_filter_fn

    fcmae = _fcmae_state_dict(**ATTO)
    reference = _official_rule(fcmae)
    converted, layout = convert_state_dict(fcmae)
    assert layout == 'fcmae'
    assert sorted(converted) == sorted([*reference, *FCMAE_DECODER])
    for key, value in reference.items():
        assert converted[key].shape == value.shape and torch.equal(converted[key], value), key
    assert reference['stages.0.0.dwconv.weight'].shape == (40, 1, 7, 7)
    assert reference['downsample_layers.1.1.weight'].shape == (80, 40, 2, 2)

    peer = timm.create_model('convnextv2_atto', pretrained=False).eval()
    missing, unexpected = peer.load_state_dict(checkpoint_filter_fn(reference, peer), strict=False)
    assert not unexpected and sorted(missing) == ['head.fc.bias', 'head.fc.weight',
                                                  'head.norm.bias', 'head.norm.weight']
    with torch.no_grad():
        features = peer.forward_intermediates(X, intermediates_only=True)

    path = _save(tmp_path, {'model': fcmae}, 'convnextv2_atto_1k_224_fcmae.pt')
    model = ConvNeXt('atto', version='v2')
    report = load_pretrained(model, path)
    _assert_features_equal(model, features)
    assert report.layout == 'fcmae' and sorted(report.loaded) == sorted(reference)
    assert sorted(report.missing) == sorted(NORM_KEYS)
    assert sorted(report.unused) == sorted(FCMAE_DECODER)
    text = str(report)
    assert 'kept at their initialisation (8): norm0.{weight,bias}' in text
    assert 'not used (15): proj.{weight,bias}, mask_token, decoder.0.dwconv.{weight,bias}' in text
    assert 'decoder.0.grn.{gamma,beta}, decoder.0.pwconv2.{weight,bias}, pred.{weight,bias}' in text

    # The released files as users report them (ConvNeXt-V2 issues #47, #65): the encoder alone,
    # already in the dense official layout; with GRN as (1, 1, 1, C) or still (1, C).
    for grn_shape in ((1, 1, 1, -1), (1, -1)):
        dense = {k: v.reshape(grn_shape) if '.grn.' in k else v for k, v in reference.items()}
        model = ConvNeXt('atto', version='v2')
        report = load_pretrained(model, _save(tmp_path, {'model': dense}, 'dense.pt'))
        assert report.layout == 'official' and not report.unused
        assert sorted(report.missing) == sorted(NORM_KEYS)
        _assert_features_equal(model, features)


def test_fcmae_refusals(tmp_path):
    """Nothing beside the encoder but the decoder is passed over; a V2 (FCMAE) file into a V1
    backbone and a V1 file into a V2 backbone are refused in words, nothing loaded."""
    fcmae = _fcmae_state_dict(**ATTO)
    extra = _save(tmp_path, {'model': {**fcmae, 'encoder.stages.0.0.extra': torch.ones(3)}})
    with pytest.raises(CheckpointError, match=r"ConvNeXt v2 'atto' checkpoint.*unexpected: "
                       r'stages\.0\.0\.extra'):
        load_pretrained(ConvNeXt('atto', version='v2'), extra)
    model = ConvNeXt('atto', version='v1')
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"does not fit this backbone \(a ConvNeXt v2 "
                       r"'atto' checkpoint\?\); missing: .*gamma.*unexpected: .*grn.*Check arch "
                       r'and version'):
        load_pretrained(model, _save(tmp_path, {'model': fcmae}))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    v1 = _save(tmp_path, {'model': randomize_(ConvNeXt('atto', version='v1')).state_dict()})
    with pytest.raises(CheckpointError, match=r"a ConvNeXt v1 'atto' checkpoint\?\); missing: "
                       r'.*grn.*unexpected: .*gamma'):
        load_pretrained(ConvNeXt('atto', version='v2'), v1)
    # As whole-model weights (load_from), an FCMAE file is pointed to init_cfg.
    from convnext_backbone.checkpoints import read_model_checkpoint
    with pytest.raises(CheckpointError, match=r'backbone-only\) ConvNeXt checkpoint, not a whole '
                       r"detector.*init_cfg=dict\(type='Pretrained'"):
        read_model_checkpoint(_save(tmp_path, {'model': fcmae}))


@pytest.mark.parametrize('prefix', ['backbone.', None])
def test_mmpretrain_fcmae_conversion(tmp_path, prefix):
    """mmpretrain's conversions of the FCMAE weights (``convnext-v2-*_3rdparty-fcmae_in1k``,
    what MMDetection's ConvNeXt-V2 recipe starts from, with prefix='backbone.'): its ConvNeXt's
    keys under ``backbone.``, without norms or head (an FCMAE encoder has none)."""
    from mmpretrain.models.backbones import ConvNeXt as PretrainConvNeXt
    peer = PretrainConvNeXt(arch='atto', out_indices=(0, 1, 2, 3), gap_before_final_norm=False,
                            use_grn=True, layer_scale_init_value=0.)
    randomize_(peer)
    encoder = {f'backbone.{k}': v for k, v in peer.state_dict().items()
               if not k.startswith('norm')}
    path = _save(tmp_path, {'state_dict': encoder, 'meta': {}})
    model = ConvNeXt('atto', version='v2')
    report = load_pretrained(model, path, prefix=prefix)
    assert report.layout == 'mmpretrain' and not report.unused
    assert sorted(report.missing) == sorted(NORM_KEYS)
    for i in range(4):  # the norms the file lacks: ours, kept at init, in the peer too
        getattr(peer, f'norm{i}').load_state_dict(getattr(model, f'norm{i}').state_dict())
    peer.eval()
    with torch.no_grad():
        _assert_features_equal(model, peer(X), norms_from_model=False)


def test_convert_weights_tool_writes_an_fcmae_encoder(tmp_path, capsys):
    from .helpers import load_tool
    fcmae = _fcmae_state_dict(**ATTO)
    src, dst = _save(tmp_path, {'model': fcmae}, 'fcmae.pt'), str(tmp_path / 'encoder.pth')
    assert load_tool('convert_weights').main([src, dst]) == 0
    out = capsys.readouterr().out
    assert 'converted from the fcmae layout (its 15 decoder tensors left out)' in out
    written = torch.load(dst)['state_dict']
    assert detect_layout(written) == 'official'
    reference = _official_rule(fcmae)
    assert sorted(written) == sorted(reference)
    assert all(torch.equal(written[k], reference[k]) for k in reference)
