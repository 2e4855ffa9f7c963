"""The package's layering (docs/architecture.md): every import of the package's own modules,
at the top of a file or inside a function, goes to a layer above, never below, and no module
imports itself round a circle. Read from the source with ``ast``, so that each module is
judged alone, whatever was imported first."""
import ast
import os.path as osp
import pkgutil

import convnext_backbone

from .helpers import ROOT

PACKAGE = 'convnext_backbone'
# Layers, leaves first: a module may import from its own layer (no circle) and those before.
LAYERS = [
    ('archs', 'errors'),
    ('checkpoints', ),
    ('backbone', ),
    ('inference', ),
    ('engine', ),
    ('data', ),
    ('analysis', 'benchmark', 'deploy'),
    ('cli', ),
]


def _modules():
    """Every module of the package, as a dotted name relative to it ('' is the package)."""
    names = ['']
    for info in pkgutil.walk_packages(convnext_backbone.__path__, prefix=''):
        names.append(info.name)
    return names


def _path(name):
    base = osp.join(ROOT, PACKAGE, *name.split('.')) if name else osp.join(ROOT, PACKAGE)
    return osp.join(base, '__init__.py') if osp.isdir(base) else base + '.py'


def _imports(name):
    """The package's modules that ``name`` imports (relative names, '' for the package)."""
    tree = ast.parse(open(_path(name)).read())
    is_package = osp.basename(_path(name)) == '__init__.py'
    here = name.split('.') if name else []
    package = here if is_package else here[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = '.'.join(base + ([node.module] if node.module else []))
                targets = [module] + [f'{module}.{a.name}'.lstrip('.') for a in node.names]
                targets = [PACKAGE + ('.' + t if t else '') for t in targets]
            else:
                targets = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + '.'):
                found.add(target[len(PACKAGE) + 1:])
    known = set(_modules())
    return {t for t in found if t in known and t != name}


def _layer(name):
    top = name.split('.')[0]
    for index, tops in enumerate(LAYERS):
        if top in tops:
            return index
    raise AssertionError(f'{name}: in no layer of docs/architecture.md; add it to LAYERS')


def test_every_import_goes_to_a_layer_above():
    wrong = []
    for name in _modules():
        if not name:
            continue  # the package's __init__ registers everything
        for target in _imports(name):
            if target and _layer(target) > _layer(name):
                wrong.append(f'{name} (layer {_layer(name)}) imports {target} '
                             f'(layer {_layer(target)})')
    assert not wrong, '\n'.join(wrong)


def test_no_import_circle():
    graph = {name: _imports(name) - {''} for name in _modules()}
    # A package imports its own submodules (its __init__); that is not a circle.
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not t.startswith(name + '.') or not name}
    state, circles = {}, []

    def visit(node, path):
        state[node] = 'open'
        for target in graph.get(node, ()):
            if state.get(target) == 'open':
                circles.append(' -> '.join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = 'done'

    for name in graph:
        if name and name not in state:
            visit(name, [name])
    assert not circles, '\n'.join(circles)


def test_the_model_imports_no_runner_data_or_tools_code():
    """backbone.py, with everything it imports, needs no engine, data or command-line code."""
    seen, todo = set(), ['backbone']
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [t for t in _imports(name) if t]
    assert {n.split('.')[0] for n in seen} <= {'backbone', 'checkpoints', 'archs', 'errors'}, \
        sorted(seen)
