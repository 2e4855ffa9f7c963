"""What several test modules share: paths of the checkout, running and importing the tools,
random non-trivial weights, and whole models built as their source frameworks build them."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, DefaultScope

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
COCO_DEMO = osp.join(ROOT, 'configs/demo/mask_rcnn_convnext_shapes_demo.py')
ADE_DEMO = osp.join(ROOT, 'configs/demo/upernet_convnext_shapes_demo.py')
CASCADE = osp.join(ROOT, 'configs/cascade_mask_rcnn_convnext_t.py')
# The backbone of the MMDetection 3 / MMSegmentation 1 zoo configs (mmpretrain's ConvNeXt).
MMPRETRAIN_BACKBONE = dict(type='mmpretrain.ConvNeXt', arch='atto', out_indices=[0, 1, 2, 3],
                           gap_before_final_norm=False, drop_path_rate=0.0,
                           layer_scale_init_value=1.0)


# --------------------------------------------------------------------------------- the tools
def load_tool(name: str):
    """A module of tools/ (``tools/{name}.py``), imported by path: putting tools/ on sys.path
    would let ``tools/test.py`` shadow the standard library's ``test`` package."""
    spec = importlib.util.spec_from_file_location(f'tools_{name}',
                                                  osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(cwd, *args, module=None, returncode=0, env=None):
    """Run a command-line tool (``tools/...`` paths are the checkout's) in ``cwd``, a scratch
    folder, so that nothing resolves against the checkout's own data/ or work_dirs/ by
    accident. Asserts the exit status (1: a refusal in words, never a traceback). Returns the
    completed process."""
    args = [osp.join(ROOT, a) if str(a).startswith('tools/') else str(a) for a in args]
    cmd = [sys.executable, '-m', module, *args] if module else [sys.executable, *args]
    run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS='ignore',
                                  **(env or {})))
    assert run.returncode == returncode, run.stdout[-3000:] + run.stderr[-5000:]
    if returncode == 1:
        assert 'Traceback' not in run.stderr, run.stderr[-3000:]
    return run


def tool_output(cwd, *args, module=None) -> str:
    """What a tool that must succeed printed (stdout and stderr)."""
    run = run_tool(cwd, *args, module=module)
    return run.stdout + run.stderr


# ---------------------------------------------------------------------------------- pictures
INFER_ALPHA = 0.6  # tools/infer.py's segmentation overlay


def palette_classes(picture, image, palette, alpha: float):
    """Per pixel, the class whose palette colour a segmentation picture shows: mmseg's
    visualizer draws ``image * (1 - alpha) + palette[class] * alpha``; -1 where the picture
    is the image's own (nothing drawn there)."""
    import numpy as np
    drawn = (picture.astype(np.float64) - image.astype(np.float64) * (1 - alpha)) / alpha
    colours = np.asarray(palette, np.float64)
    distance = np.abs(drawn[..., None, :] - colours).max(-1)  # (H, W, classes)
    nearest = distance.argmin(-1)
    return np.where(distance.min(-1) <= 3 / alpha, nearest, -1)


def assert_mask_truth_drawn(truth_panel, image, truth, classes) -> None:
    """The ground-truth half of a ``tools/infer.py --show-gt`` picture of a mask folder shows
    each labelled pixel's class in the palette ``--data`` gives its classes."""
    from convnext_backbone.data.configure import palette_for
    seen = palette_classes(truth_panel, image, palette_for(len(classes)), INFER_ALPHA)
    labelled = truth != 255
    assert (seen[labelled] == truth[labelled]).mean() > 0.9


def coco_boxes_mask(annotation_file, image_name: str, shape):
    """(H, W) bool: the pixels inside the boxes of ``image_name``'s objects (its file name, or
    the name without extension) in a COCO annotation file."""
    import json
    import numpy as np
    with open(annotation_file) as f:
        coco = json.load(f)
    image_id = next(im['id'] for im in coco['images']
                    if osp.splitext(im['file_name'])[0] == osp.splitext(image_name)[0])
    inside = np.zeros(shape, bool)
    for ann in coco['annotations']:
        if ann['image_id'] == image_id:
            x, y, w, h = (int(round(v)) for v in ann['bbox'])
            inside[y:y + h, x:x + w] = True
    return inside


# ------------------------------------------------------------------------------------ models
def randomize_(model: torch.nn.Module, scale: float = 0.5) -> torch.nn.Module:
    """Give every parameter random values, so that layer scales (1e-6 at init) and GRN (zero at
    init) do not hide differences in the branches they multiply."""
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, scale / max(1, param[0].numel() ** 0.5) if param.dim() > 1 else scale)
    return model


def randomize_batch_norms_(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial running statistics for every BatchNorm (eval mode uses them)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def model_config(path, **model):
    """A config without its ImageNet init_cfg, changed by ``model``; Cascade as atto with few
    proposals (the 4-conv box heads are slow on CPU)."""
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None
    cfg.merge_from_dict(dict(model=model))
    if path == CASCADE:
        cfg.merge_from_dict(dict(model=dict(
            backbone=dict(arch='atto'), neck=dict(in_channels=[40, 80, 160, 320]),
            test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=30)))))
    return cfg


def build(path, new_backbone=None, **model):
    """The config's model (eval mode, random non-trivial weights and BN statistics), changed
    by ``model``, with another backbone config if given."""
    cfg = model_config(path, **model)
    if new_backbone is not None:
        import mmpretrain.models  # noqa: F401  registers mmpretrain.ConvNeXt
        cfg.model.backbone = new_backbone
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        net = revert_sync_batchnorm(MODELS.build(cfg.model))
    return randomize_batch_norms_(randomize_(net)).eval()


def hf_upernet(num_labels=150, **backbone):
    """Hugging Face's UperNet on a ConvNeXt atto, random weights."""
    import transformers
    config = transformers.UperNetConfig(
        backbone_config=transformers.ConvNextConfig(
            depths=[2, 2, 6, 2], hidden_sizes=[40, 80, 160, 320],
            out_features=['stage1', 'stage2', 'stage3', 'stage4'], **backbone),
        hidden_size=64, auxiliary_in_channels=160, auxiliary_channels=32, num_labels=num_labels)
    peer = transformers.UperNetForSemanticSegmentation(config)
    return randomize_batch_norms_(randomize_(peer)).eval()


def message_hub_state():
    """What a Runner checkpoint holds besides tensors: HistoryBuffers and numpy values."""
    hub = MessageHub.get_instance('test_checkpoints')
    hub.update_scalar('train/loss', 1.5)
    hub.update_info('iter', 10)
    return hub.state_dict()


def save(tmp_path, state_dict, name='model.pth', **meta):
    """A Runner-like checkpoint file of ``state_dict`` with ``meta``."""
    path = str(tmp_path / name)
    torch.save({'meta': meta, 'state_dict': state_dict, 'message_hub': message_hub_state()},
               path)
    return path
