"""tools/publish_model.py: the weights and meta of a training checkpoint, nothing else, under
its sha256 prefix; the file evaluates through tools/test.py as the original; others refused."""
import hashlib
import os
import os.path as osp

import torch

from convnext_backbone.data.demo import make_coco_shapes

from .helpers import COCO_DEMO, build, run_tool, save, tool_output


def _map(output):
    """The COCO metrics of tools/test.py's last line (without its timings)."""
    line = [line for line in output.splitlines() if 'bbox_mAP' in line and '(test)' in line][-1]
    return line.split('coco/', 1)[1].split('data_time')[0]


def test_published_file_evaluates_as_the_original(tmp_path):
    data = str(tmp_path / 'coco')
    make_coco_shapes(data, num_train=1, num_val=2, size=128, seed=3)
    checkpoint = save(tmp_path, build(COCO_DEMO).state_dict(), name='epoch_1.pth', epoch=1)
    original = torch.load(checkpoint, weights_only=False)
    original['optimizer'] = {'state': {}, 'param_groups': []}
    torch.save(original, checkpoint)
    out = tool_output(tmp_path, 'tools/publish_model.py', checkpoint, tmp_path / 'pub')
    (name, ) = os.listdir(tmp_path / 'pub')  # no temporary file left
    path = tmp_path / 'pub' / name
    assert name == f'epoch_1-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}.pth'
    assert str(path) in out
    published = torch.load(path, weights_only=False)
    assert sorted(published) == ['meta', 'state_dict'] and published['meta'] == {'epoch': 1}
    assert published['state_dict'].keys() == original['state_dict'].keys()
    results = [_map(tool_output(tmp_path, 'tools/test.py', COCO_DEMO, ckpt, '--data', data,
                                '--work-dir', str(tmp_path / f'w{i}')))
               for i, ckpt in enumerate((checkpoint, path))]
    assert results[0] == results[1]


def test_what_is_not_a_training_checkpoint_is_refused(tmp_path):
    bare = tmp_path / 'bare.pth'
    torch.save({'backbone.stem.weight': torch.zeros(1)}, bare)
    run = run_tool(tmp_path, 'tools/publish_model.py', bare, tmp_path / 'pub', returncode=1)
    assert 'is not a training checkpoint' in run.stderr and 'no state_dict, meta' in run.stderr
    neck_only = save(tmp_path, {'neck.conv.weight': torch.zeros(1)}, name='neck.pth')
    run = run_tool(tmp_path, 'tools/publish_model.py', neck_only, tmp_path / 'pub', returncode=1)
    assert 'not a detector or segmentor checkpoint' in run.stderr
    assert not osp.exists(tmp_path / 'pub') or not os.listdir(tmp_path / 'pub')
