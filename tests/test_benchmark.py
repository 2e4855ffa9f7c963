"""The benchmark's parts (``convnext_backbone.benchmark``) and its command line, at sizes that run
in seconds on CPU; no timing assertions (times depend on the machine and its load)."""
import json
import os.path as osp
import platform
import re

import pytest
import timm
import torch
from mmengine.config import Config
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convnext_backbone import ConvNeXt
from convnext_backbone.benchmark import parse_args
from convnext_backbone.benchmark.floor import MatmulFloor, matmul_peak_gflops
from convnext_backbone.benchmark.measure import (COMPILED, FLOOR, OPTIMIZED, count_flops,
                                                 cpu_peak_allocated, precision_name, run_case,
                                                 train_step_activations)
from convnext_backbone.benchmark.peers import PEERS, build_peers, max_relative_difference
from convnext_backbone.benchmark.profile import GEMMS, OUTSIDE, model_ranges, profile_case
from convnext_backbone.benchmark.report import STRIDE_32, to_markdown

from .helpers import ROOT, randomize_, run_tool, tool_output

# One thread, here and in the tool's process: nothing here is timed, and on a shared, busy
# machine two threads' OpenMP barriers wait for a descheduled thread (10x slower, measured).
ONE_THREAD = dict(OMP_NUM_THREADS='1')


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------- peers
@pytest.mark.parametrize('version', ['v1', 'v2'])
def test_peers_compute_our_function_with_our_weights(version):
    """Random non-trivial weights (layer scale and GRN away from their init) reach every peer:
    the same outputs as ours, and timm's peer is the model ``features_only=True`` builds."""
    weights = randomize_(ConvNeXt('atto', version=version)).state_dict()
    peers = build_peers('atto', version, state_dict=weights)
    assert tuple(peers) == PEERS  # mmpretrain is installed here
    for key, value in peers['convnext_backbone'].state_dict().items():
        torch.testing.assert_close(value, weights[key])
    diffs = max_relative_difference(peers, 'cpu')
    assert diffs['convnext_backbone'] < 1e-6  # oneDNN's GEMMs on CPU: rounding
    assert all(d < 1e-5 for d in diffs.values()), diffs
    name = 'convnext_atto' if version == 'v1' else 'convnextv2_atto'
    features_only = timm.create_model(name, pretrained=False, features_only=True)
    assert ({k: v.shape for k, v in peers['timm'].body.state_dict().items()}
            == {k: v.shape for k, v in features_only.state_dict().items()})


def test_with_cp_reduces_every_peers_train_step_activations():
    """The memory measure (what ``measure_memory`` runs in its fresh process) sees gradient
    checkpointing, which every peer is built with when asked."""
    x = torch.randn(1, 3, 128, 128)
    plain, cp = (build_peers('atto', 'v1', with_cp=with_cp) for with_cp in (False, True))
    for name in ('convnext_backbone', 'mmpretrain'):  # their blocks hold the flag
        flags = [m.with_cp for m in cp[name].modules() if hasattr(m, 'with_cp')]
        assert flags and all(flags), name
    assert cp['timm'].body.grad_checkpointing
    for name in PEERS:
        without, with_ = train_step_activations(plain[name], x), train_step_activations(cp[name], x)
        assert 0 < with_ < 0.8 * without, (name, without, with_)


def test_dilated_peers_and_their_activations():
    """At output stride 8 the peers are ours and timm's, dilated alike (mmpretrain has no
    output stride), on the same weights as at stride 32; a train step keeps more activations."""
    dilated, plain = build_peers('atto', 'v1', output_stride=8), build_peers('atto', 'v1')
    assert tuple(dilated) == ('convnext_backbone', 'timm')
    assert dilated['convnext_backbone'].out_strides == (4, 8, 8, 8)
    for key, value in plain['convnext_backbone'].state_dict().items():
        assert torch.equal(dilated['convnext_backbone'].state_dict()[key], value)
    assert max(max_relative_difference(dilated, 'cpu').values()) < 1e-5
    # (At 64x64 stride 32's 2x2 last stage makes the convolutions' backward take workspace
    # of its own, more than the dilated model's activations: measured 18 MB against 12.)
    x = torch.randn(1, 3, 128, 128)
    assert [o.shape[-1] for o in dilated['timm'](x)] == [32, 16, 16, 16]
    for name in dilated:  # measured 1.54x for both
        more, fewer = (train_step_activations(p[name], x) for p in (dilated, plain))
        assert more > 1.3 * fewer, (name, more, fewer)


def test_cpu_peak_allocated_follows_torch_allocations():
    def step():
        a = torch.empty(4 << 20, dtype=torch.uint8)   # 4 MiB
        b = torch.empty(8 << 20, dtype=torch.uint8)   # 12 MiB live
        del a
        c = torch.empty(6 << 20, dtype=torch.uint8)   # 14 MiB live: the peak
        del b, c

    peak = cpu_peak_allocated(step)
    assert 14 << 20 <= peak < (14 << 20) + (1 << 16)


# ------------------------------------------------------------------------------------- floor
def test_matmul_floor_runs_the_models_own_linear_products():
    """The floor's products have the shapes of the model's Linear layers at the input (the
    pixels of each stage times its widths), are our forward's addmm calls (the same FLOPs), and
    a train step adds two backward products each."""
    model = ConvNeXt('atto').eval()
    x = torch.randn(2, 3, 64, 96)
    floor = MatmulFloor(model, x, mode='eval', dtype=None)
    expected = []
    for i, (depth, width) in enumerate(zip(model.depths, model.widths)):
        rows = 2 * (64 // (4 << i)) * (96 // (4 << i))
        expected += [(rows, width, 4 * width), (rows, 4 * width, width)] * depth
    assert floor.shapes == expected
    linears = [(m.in_features, m.out_features) for m in model.modules()
               if isinstance(m, nn.Linear)]
    assert [(k, n) for _, k, n in floor.shapes] == linears
    with FlopCounterMode(display=False) as counter:  # its Linear layers' addmm
        model(x)
    addmm_flops = counter.get_flop_counts()['Global'][torch.ops.aten.addmm]
    assert len(floor.calls) == 2 * sum(model.depths) and floor.flops == addmm_flops
    assert set(floor.gemms) <= {'addmm', 'onednn'} and len(floor.gemms) == len(floor.calls)
    steps = [floor.step(), floor.step()]
    assert 0 < floor.seconds() <= min(steps)  # each product's fastest time, over the steps
    train = MatmulFloor(model.train(), x, mode='train', dtype=torch.bfloat16)
    assert len(train.calls) == 6 * sum(model.depths) and train.flops == 3 * addmm_flops
    assert model.training  # left as it was
    train.step()
    assert matmul_peak_gflops('cpu', n=256, repeats=1) > 0


# ----------------------------------------------------------------------------------- profile
def test_profile_accounts_for_the_forward_above_its_floor_operator_by_operator():
    """The account's rows add up to the profiled forward (and to the clock's time of it), name
    the operators of every part of the model, and put each stage's matrix products beside the
    floor's: 'above floor' adds up to the forward less the floor."""
    model = ConvNeXt('atto')
    account = profile_case(model, torch.randn(1, 3, 64, 64), forwards=2)
    rows = account['rows']
    assert sum(r['ms'] for r in rows) == pytest.approx(account['forward_ms'], rel=1e-6)
    assert sum(r['floor_ms'] for r in rows) == pytest.approx(account['floor_ms'], rel=1e-6)
    assert sum(r['above_floor_ms'] for r in rows) == pytest.approx(
        account['forward_ms'] - account['floor_ms'], rel=1e-6, abs=1e-6)
    # The ranges hold what the clock measured around the profiled forwards.
    assert account['forward_ms'] == pytest.approx(account['profiled_wall_ms'], rel=0.1, abs=0.5)
    assert all(account[k] > 0 for k in ('unprofiled_forward_ms', 'unprofiled_floor_ms'))
    assert list(dict.fromkeys(r['range'] for r in rows)) == [*model_ranges(model), OUTSIDE]
    assert model_ranges(model)['stage 2'] is model.stages[2] and model.training  # as it was
    for i, depth in enumerate(model.depths):
        stage = {r['operator']: r for r in rows if r['range'] == f'stage {i}'}
        (products, ) = [r for op, r in stage.items() if op.split(' < ')[0] in GEMMS]
        assert products['calls'] == 2 * depth and products['floor_ms'] > 0
        assert [r for op, r in stage.items() if op != products['operator']
                and r['floor_ms'] == 0] == [r for r in stage.values() if r is not products]
        assert any('convolution' in op for op in stage), stage  # the depthwise 7x7
        assert any('layer_norm' in op for op in stage), stage
    stem = [r['operator'] for r in rows if r['range'] == 'stem']
    assert any('convolution' in op for op in stem) and any('layer_norm' in op for op in stem)


# ----------------------------------------------------------------------------------- measure
def test_a_train_case_in_bf16_channels_last_times_every_peer_and_the_floor():
    peers = build_peers('atto', 'v1')
    ours = peers['convnext_backbone']
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    for model in peers.values():
        model.to(memory_format=torch.channels_last)
    rows = run_case(peers, ours, x, mode='train', amp=torch.bfloat16, warmup=0, repeats=1)
    assert list(rows) == [*PEERS, FLOOR]
    assert [r['kind'] for r in rows.values()] == ['eager'] * 3 + ['floor']
    with torch.autocast('cpu', dtype=torch.bfloat16):
        flops = count_flops(lambda: ours(x))
    for name in PEERS:  # the same work for every peer: our forward's FLOPs, times 3
        assert rows[name]['gflop'] == pytest.approx(3 * flops / 1e9)
    assert rows[FLOOR]['gflop'] == MatmulFloor(ours, x, mode='train', dtype=None).flops / 1e9
    for name, r in rows.items():
        if name == FLOOR:  # the sum of its products' fastest times: at most its fastest step
            assert 0 < r['median_s'] <= r['min_s'] <= r['max_s']
        else:
            assert 0 < r['min_s'] <= r['median_s'] <= r['max_s']
    assert precision_name('bf16', 'channels_last') == 'bf16 autocast + channels_last'
    assert precision_name('fp32', 'contiguous') == 'fp32'


def test_compiled_rows_compute_what_our_model_does(monkeypatch):
    """The compiled rows' plumbing, with a backend that compiles no code (inductor's C++ takes
    a minute on 2 busy cores): their kind, compile time, and outputs compared with ours."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, 'compile', lambda model: compile_(model, backend='aot_eager'))
    ours = build_peers('atto', 'v1')['convnext_backbone']
    rows = run_case({'convnext_backbone': ours}, ours, torch.randn(1, 3, 64, 64), mode='eval',
                    amp=None, warmup=0, repeats=1, compile_peers=True)
    assert list(rows) == ['convnext_backbone', 'convnext_backbone' + COMPILED, FLOOR]
    row = rows['convnext_backbone' + COMPILED]
    assert row['kind'] == 'compiled' and row['compile_s'] > 0 and row['median_s'] > 0
    assert row['max_relative_difference'] < 1e-5


def test_a_dilated_case_times_our_stride_32_model_beside_it():
    peers = build_peers('atto', 'v1', output_stride=16)
    ours = peers['convnext_backbone']
    stride_32 = ConvNeXt('atto')
    x = torch.randn(1, 3, 64, 64)
    rows = run_case(peers, ours, x, mode='eval', amp=None, warmup=0, repeats=1,
                    references={STRIDE_32: stride_32})
    assert list(rows) == ['convnext_backbone', 'timm', STRIDE_32, FLOOR]
    assert rows[STRIDE_32]['kind'] == 'reference' and rows[STRIDE_32]['median_s'] > 0
    # Each with its own work (its forward's FLOPs): stage 3 at 4x the pixels when dilated.
    assert rows[STRIDE_32]['gflop'] == pytest.approx(count_flops(lambda: stride_32(x)) / 1e9)
    assert rows['timm']['gflop'] == pytest.approx(count_flops(lambda: ours(x)) / 1e9)
    assert rows['timm']['gflop'] > 1.2 * rows[STRIDE_32]['gflop']


# ------------------------------------------------------------------------------------ report
def test_report_compares_dilated_cases_with_stride_32():
    def row(kind, median):
        return dict(kind=kind, median_s=median, min_s=median, max_s=median, gflop=2.0)

    results = dict(
        machine=dict(device='cpu', torch='2', timm='1', date='today', matmul_peak_gflops=100.0),
        cases=[dict(arch='tiny', mode='eval', size='64x64', batch=1, precision='fp32',
                    output_stride=16,
                    peers={'convnext_backbone': row('eager', 0.6), 'timm': row('eager', 0.8),
                           STRIDE_32: row('reference', 0.4), FLOOR: row('floor', 0.5)})],
        memory=[dict(arch='tiny', size='64x64', batch=1, peer='convnext_backbone', plain=3 << 20,
                     with_cp=1 << 20, output_stride=16),
                dict(arch='tiny', size='64x64', batch=1, peer='convnext_backbone', plain=2 << 20,
                     with_cp=1 << 20)])
    lines = to_markdown(results).splitlines()
    assert ('| tiny, stride 16 | eval | 64x64 | 1 | fp32 | convnext_backbone | 0.600 | '
            '0.600-0.600 | 0.75 | 1.20 | 3 | 3 | - |') in lines
    assert (f'| tiny, stride 16 | eval | 64x64 | 1 | fp32 | {STRIDE_32} | 0.400 | 0.400-0.400 | '
            '- | - | 5 | 5 | - |') in lines
    assert '| tiny, stride 16 | 64x64 | 1 | convnext_backbone | 3 | 1 | 0.33 |' in lines
    # ours over ours at stride 32, over timm's dilated model; activations over stride 32's
    assert lines[-1] == '| tiny, stride 16 | eval | 64x64 | 1 | fp32 | 1.50 | 0.75 | 1.50 |'


def test_report_compares_compiled_rows_with_compiled_peers_and_shows_memory():
    def row(kind, median, **extra):
        return dict(kind=kind, median_s=median, min_s=median, max_s=median, gflop=2.0, **extra)

    results = dict(
        machine=dict(device='cpu', torch='2', timm='1', date='today', matmul_peak_gflops=100.0,
                     matmul_peak_gflops_by_dtype={'fp32': 100.0, 'bf16': 200.0},
                     allocator=None, inductor_cache='empty at start'),
        cases=[dict(arch='tiny', mode='eval', size='64x64', batch=1, precision='bf16 autocast',
                    peers={'convnext_backbone': row('eager', 0.5), 'timm': row('eager', 1.0),
                           'convnext_backbone (compiled)': row('compiled', 0.2, compile_s=3.0,
                                                               max_relative_difference=2e-7),
                           'timm (compiled)': row('compiled', 0.4, compile_s=4.0),
                           FLOOR: row('floor', 0.1)})],
        memory=[dict(arch='tiny', size='64x64', batch=1, peer='timm', plain=4 << 20,
                     with_cp=1 << 20)])
    lines = to_markdown(results).splitlines()
    assert lines[0] == ('Machine: cpu; torch 2, timm 1; today. Matmul peak: fp32 100, bf16 200 '
                        'GFLOP/s. Inductor cache: empty at start.')
    # ratio to the fastest other peer of its kind; x floor; GFLOP/s; % of the bf16 peak
    assert ('| tiny | eval | 64x64 | 1 | bf16 autocast | convnext_backbone | 0.500 | '
            '0.500-0.500 | 0.50 | 5.00 | 4 | 2 | - |') in lines
    assert ('| tiny | eval | 64x64 | 1 | bf16 autocast | convnext_backbone (compiled) | 0.200 | '
            '0.200-0.200 | 0.50 | 2.00 | 10 | 5 | 3.0 |') in lines
    assert '| tiny | eval | 64x64 | 1 | bf16 autocast | matmul floor | 0.100 | 0.100-0.100 | - | ' \
        '1.00 | 20 | 10 | - |' in lines
    assert any('convnext_backbone (compiled) 2.0e-07' in line for line in lines)
    assert lines[-1] == '| tiny | 64x64 | 1 | timm | 4 | 1 | 0.25 |'


# ------------------------------------------------------------------------------ command line
def test_cuda_defaults_are_every_precision_and_layout():
    cuda = parse_args(['--device', 'cuda'])
    assert cuda.precisions == ['fp32', 'bf16', 'fp16']
    assert cuda.memory_formats == ['contiguous', 'channels_last']
    cpu = parse_args(['--device', 'cpu'])
    assert cpu.precisions == ['fp32'] and cpu.memory_formats == ['contiguous']


def test_a_size_without_its_width_is_refused_in_words(capsys):
    with pytest.raises(SystemExit):
        parse_args(['--sizes', '512'])
    assert '--sizes 512: expected HEIGHTxWIDTH, e.g. 512x512' in capsys.readouterr().err


def test_the_tool_runs_its_smallest_case_and_writes_both_reports(tmp_path):
    glibc = platform.libc_ver()[0] == 'glibc'
    run = run_tool(tmp_path, 'tools/benchmark.py', '--archs', 'atto', '--sizes', '64x64',
                   '--batches', '1', '--repeats', '1', '--warmup', '0', '--modes', 'eval',
                   '--device', 'cpu', '--out', 'out', '--profile',
                   *(['--keep-freed-memory'] if glibc else []), env=ONE_THREAD)
    results = json.loads((tmp_path / 'out/results.json').read_text())
    markdown = (tmp_path / 'out/results.md').read_text()
    machine = results['machine']
    assert machine['torch'] == torch.__version__ and machine['timm'] == timm.__version__
    assert set(machine['matmul_peak_gflops_by_dtype']) == {'fp32'}
    assert machine['matmul_peak_gflops'] > 0 and machine['inductor_cache'] is None
    assert glibc == ('freed memory kept' in (machine['allocator'] or ''))
    (case, ) = results['cases']
    assert {k: case[k] for k in ('arch', 'mode', 'size', 'batch', 'precision')} == dict(
        arch='atto', mode='eval', size='64x64', batch=1, precision='fp32')
    assert list(case['peers']) == [*PEERS, OPTIMIZED, FLOOR]
    model = ConvNeXt('atto')
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        flops = count_flops(lambda: model(x))
    for name in [*PEERS, OPTIMIZED]:
        assert case['peers'][name]['kind'] == 'eager' and case['peers'][name]['median_s'] > 0
        assert case['peers'][name]['gflop'] == pytest.approx(flops / 1e9)
    assert case['peers'][FLOOR]['gflop'] == MatmulFloor(model, x, mode='eval', dtype=None
                                                        ).flops / 1e9
    diffs = results['max_relative_difference']['atto']
    assert set(diffs) == {*PEERS, OPTIMIZED} and all(d < 1e-5 for d in diffs.values())
    assert results['memory'] == []
    # The Markdown file is the JSON's report, and the tool printed it after each case's JSON.
    assert markdown == to_markdown(results)
    assert '| arch | mode | input | batch | precision | peer | median s | min-max s | ratio to ' \
        'fastest peer | x matmul floor | GFLOP/s | % of peak | compile s |' in markdown
    rows = [line for line in markdown.splitlines() if line.startswith('| atto | eval | 64x64 |')]
    assert [row.split(' | ')[5] for row in rows] == [*PEERS, OPTIMIZED, FLOOR]
    assert rows[-1].split(' | ')[9] == '1.00'  # the floor is 1x itself
    # --profile: the case's account, in both reports (profile_case's own test checks its rows)
    account = case['profile']
    assert account['forwards'] == 1 and account['rows']
    assert ("Where our forward's time above the matmul floor goes: atto eval 64x64, batch 1, "
            'fp32') in markdown
    assert '| range | operator | calls | ms | floor ms | above floor ms |' in markdown
    assert f"Profiled forward {account['forward_ms']:.1f} ms" in markdown
    assert markdown in run.stdout and json.dumps(case) in run.stdout


def test_the_tool_times_dilated_cases_beside_stride_32(tmp_path):
    run_tool(tmp_path, 'tools/benchmark.py', '--archs', 'atto', '--sizes', '64x64',
             '--batches', '1', '--repeats', '1', '--warmup', '0', '--modes', 'eval',
             '--device', 'cpu', '--out', 'out', '--output-strides', '16', env=ONE_THREAD)
    results = json.loads((tmp_path / 'out/results.json').read_text())
    (case, ) = results['cases']
    assert case['output_stride'] == 16
    assert list(case['peers']) == ['convnext_backbone', 'timm', OPTIMIZED, STRIDE_32, FLOOR]
    assert list(results['max_relative_difference']) == ['atto, stride 16']
    markdown = (tmp_path / 'out/results.md').read_text()
    assert "| ours, x stride 32 | ours, x timm's dilated |" in markdown


# ------------------------------------------------------------------------ the deploy benchmark
def test_deploy_benchmark_tables_the_demo_detector_and_refuses_a_resized_size(tmp_path):
    """tools/benchmark_deploy.py on the Mask R-CNN demo (192x192, which its test resize keeps):
    PyTorch eager and the onnxruntime file in one table, the file's detections matched to
    PyTorch's (score_thr 0: max_per_img each); a --size the test resize changes is refused before
    anything is exported."""
    demo = 'configs/demo/mask_rcnn_convnext_shapes_demo.py'
    run = run_tool(tmp_path, 'tools/benchmark_deploy.py', osp.join(ROOT, demo), '--size', '128',
                   '128', '--variants', 'torch', 'ort-fp32', '--no-backbone', returncode=1,
                   env=ONE_THREAD)
    assert 'the test resize of mask_rcnn_convnext_shapes_demo.py (score_thr 0) makes it ' \
           '192x192; give a size it keeps' in run.stderr
    assert 'Wrote' not in run.stdout + run.stderr
    output = tool_output(tmp_path, 'tools/benchmark_deploy.py', osp.join(ROOT, demo), '--size',
                         '192', '192', '--variants', 'torch', 'ort-fp32', '--no-backbone',
                         '--runs', '1', '--threads', '1')
    rows = {line.split(' | ')[2]: line for line in output.splitlines()
            if line.startswith('| mask_rcnn_convnext_shapes_demo.py (score_thr 0) | 192x192 |')}
    assert set(rows) == {'torch', 'ort-fp32'} and '(reference)' in rows['torch']
    kept = Config.fromfile(osp.join(ROOT, demo)).model.test_cfg.rcnn.max_per_img
    assert re.search(rf'\| \d+% of {kept} detections \|$', rows['ort-fp32']), rows['ort-fp32']
