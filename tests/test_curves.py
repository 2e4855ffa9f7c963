"""tools/plot_curves.py: the loss and a metric of two runs' logs drawn, one colour per run."""
import json

import numpy as np
from PIL import Image

from .helpers import run_tool, tool_output


def _run(folder, losses, maps):
    vis = folder / '20260101_000000' / 'vis_data'
    vis.mkdir(parents=True)
    lines = [dict(lr=0.1, loss=v, iter=i + 1, epoch=1) for i, v in enumerate(losses)]
    lines += [{'coco/bbox_mAP': v, 'step': i + 1} for i, v in enumerate(maps)]
    (vis / 'scalars.json').write_text('\n'.join(json.dumps(line) for line in lines))


def test_two_runs_in_one_picture(tmp_path):
    _run(tmp_path / 'a', [2.0, 1.5, 1.0], [0.1, 0.3])
    _run(tmp_path / 'b', [2.5, 2.0, 1.8], [0.05, 0.2])
    out = tmp_path / 'curves.png'
    tool_output(tmp_path, 'tools/plot_curves.py', tmp_path / 'a', tmp_path / 'b', '--keys',
                'loss', 'bbox_mAP', '--out', out)
    picture = np.asarray(Image.open(out).convert('RGB')).astype(int)
    assert picture.shape[1] > picture.shape[0]  # two panels side by side
    # matplotlib's first two colours (blue, orange), one per run, are drawn
    for colour in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(picture - colour).max(-1) < 10).sum() > 100, colour
    run = run_tool(tmp_path, 'tools/plot_curves.py', tmp_path / 'a', '--keys', 'mIoU',
                   '--out', out, returncode=1)
    assert "No run logged 'mIoU'" in run.stderr and 'coco/bbox_mAP' in run.stderr


def test_epoch_based_runs_are_told_from_iteration_based(tmp_path):
    """Their validation panels' axis is the epoch: mmengine logs validation by epoch there."""
    from convnext_backbone.analysis.curves import is_epoch_based, scalars_file
    _run(tmp_path / 'a', [2.0], [0.1])
    iter_based = tmp_path / 'b' / '20260101_000000' / 'vis_data'
    iter_based.mkdir(parents=True)
    (iter_based / 'scalars.json').write_text(json.dumps(dict(loss=1.0, iter=10)) + '\n'
                                             + json.dumps(dict(mIoU=40.0, step=10)))
    assert is_epoch_based(scalars_file(str(tmp_path / 'a')))
    assert not is_epoch_based(scalars_file(str(tmp_path / 'b')))
