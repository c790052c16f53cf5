"""Static checks of the Slicer module and extension files, which CI cannot run inside the Slicer application."""
from __future__ import annotations

import ast
import hashlib
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "Speckle2SelfSlicer"
MODULE_FILE = MODULE_DIR / "Speckle2SelfSlicer.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "Speckle2SelfSlicer.ui"
MODULE_CMAKE = MODULE_DIR / "CMakeLists.txt"


@pytest.fixture(scope="module")
def source() -> str:
    return MODULE_FILE.read_text()


@pytest.fixture(scope="module")
def widgets() -> dict[str, ET.Element]:
    """The .ui file's widgets by name."""
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


def constant(source: str, name: str):
    """The literal value of a module-level constant of the module file."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(name)


def combo_items(widget: ET.Element) -> list[str]:
    return [item.find("property/string").text for item in widget.findall("item")]


def cmake_list(text: str, variable: str) -> list[str]:
    body = re.search(rf"set\({variable}\s(.*?)\)", text, re.S).group(1)
    return [entry.replace("${MODULE_NAME}", "Speckle2SelfSlicer") for entry in body.split()]


def test_every_widget_the_module_uses_is_in_the_ui_file(source, widgets):
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used and used <= set(widgets), sorted(used - set(widgets))


def parameter_fields(source: str) -> dict[str, str]:
    """The fields of the module's @parameterNodeWrapper class: name -> annotation source."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", None) == "parameterNodeWrapper"
                                                  for d in node.decorator_list):
            return {f.target.id: ast.unparse(f.annotation) for f in node.body if isinstance(f, ast.AnnAssign)}
    raise KeyError("no @parameterNodeWrapper class")


def enum_values(source: str, name: str) -> list:
    """The member values of an enum.Enum class of the module file, in order."""
    [cls] = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == name]
    return [ast.literal_eval(a.value) for a in cls.body if isinstance(a, ast.Assign)]


def bound_widgets(widgets: dict[str, ET.Element]) -> dict[str, ET.Element]:
    """The .ui file's widgets bound to a parameter (dynamic property SlicerParameterName), by parameter."""
    bound = {}
    for widget in widgets.values():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = widget
    return bound


def test_every_parameter_is_bound_to_a_widget_that_can_show_its_type(source, widgets):
    """The widget-type pairs slicer.parameterNodeWrapper's GUI connectors support (Slicer 5.2+): a spin box or
    slider needs a bounded type (else the connector widens its range), a combo box an enum or a Choice."""
    fields, bound = parameter_fields(source), bound_widgets(widgets)
    assert set(bound) == set(fields) and len(fields) == 16
    tree = ast.parse(source).body
    enums = {n.name for n in tree if isinstance(n, ast.ClassDef) and "enum.Enum" in map(ast.unparse, n.bases)}
    aliases = {n.targets[0].id: ast.unparse(n.value) for n in tree if isinstance(n, ast.Assign)
               and isinstance(n.targets[0], ast.Name)}
    for parameter, widget in bound.items():
        annotation, kind = aliases.get(fields[parameter], fields[parameter]), widget.get("class")
        if kind == "QCheckBox":
            assert annotation == "bool", parameter
        elif kind == "QSpinBox":
            assert annotation.startswith("Annotated[int, WithinRange("), parameter
        elif kind == "ctkSliderWidget":
            assert annotation.startswith("Annotated[float, WithinRange("), parameter
        elif kind == "QComboBox":
            assert annotation in enums or annotation.startswith("Annotated[int, Choice("), parameter
        else:
            assert kind == "qMRMLNodeComboBox", parameter
            listed = {s.text for p in widget.findall("property") if p.get("name") == "nodeTypes"
                      for s in p.iter("string")}
            assert set(re.findall(r"slicer\.(vtkMRML\w+)", annotation)) == listed, parameter
            assert "None" in annotation or annotation.startswith("Optional["), parameter  # none is a value


def test_choices_match_what_the_code_maps_them_to(source):
    from Speckle2SelfSlicerLib import FRAMES
    from speckle2self.weights import SHIPPED

    assert tuple(enum_values(source, "Frames")) == FRAMES
    assert enum_values(source, "Device") == ["auto", "cpu", "cuda"]
    assert enum_values(source, "Model") == [*SHIPPED, "file"]
    assert enum_values(source, "FinetuneUnit") == ["steps", "minutes"]
    sizes = re.search(r"finetuneSize: Annotated\[int, Choice\((\[.*?\])\)\] = (\d+)", source)
    assert all(size % 16 == 0 for size in ast.literal_eval(sizes.group(1)))
    assert int(sizes.group(2)) in ast.literal_eval(sizes.group(1))


BENCH_DIR = MODULE_DIR / "speckle2self" / "bench"
"""The benchmark machinery: part of the Python package, never shipped in the extension."""
VIEWER_DIR = MODULE_DIR / "Speckle2SelfViewer"
"""The browser page: a front end of its own (`speckle2self view`), not part of the extension."""


def product_python_files() -> set[Path]:
    """Every Python file of the module, its logic and the core package, outside the benchmark machinery and the
    browser page."""
    skip = ("__pycache__", ".egg-info")
    return {p for p in MODULE_DIR.rglob("*.py")
            if not any(s in str(p) for s in skip) and not {BENCH_DIR, VIEWER_DIR} & set(p.parents)}


def test_cmake_lists_every_file_the_module_needs(source):
    from speckle2self.weights import DEFAULT_WEIGHTS, card_path

    text = MODULE_CMAKE.read_text()
    listed = set(cmake_list(text, "MODULE_PYTHON_SCRIPTS")) | set(cmake_list(text, "MODULE_PYTHON_RESOURCES"))
    needed = product_python_files()
    needed |= {UI_FILE, MODULE_DIR / "Resources" / "Icons" / "Speckle2SelfSlicer.png", DEFAULT_WEIGHTS,
               card_path(DEFAULT_WEIGHTS)}
    needed |= set((MODULE_DIR / "Resources" / "SampleData").iterdir())
    needed |= {p for p in DEFAULT_WEIGHTS.parent.iterdir() if p.suffix in (".pt", ".json", ".md", ".npz")}
    needed |= {p for twin in DEFAULT_WEIGHTS.parent.glob("int8_*") for p in twin.iterdir()}
    missing = sorted(str(p.relative_to(MODULE_DIR)) for p in needed if str(p.relative_to(MODULE_DIR)) not in listed)
    assert not missing
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_no_benchmark_module_ships_and_the_product_never_imports_one():
    scripts = cmake_list(MODULE_CMAKE.read_text(), "MODULE_PYTHON_SCRIPTS")
    bench_files = sorted(str(p.relative_to(MODULE_DIR)) for p in BENCH_DIR.rglob("*.py"))
    assert len(bench_files) >= 10  # simulate, peers/, benchmark, report, sets, speed, ablation, finetune_curve...
    assert not [entry for entry in scripts if entry.startswith("speckle2self/bench/")]
    assert not set(bench_files) & set(scripts)
    modules = sorted(".".join(p.relative_to(MODULE_DIR).with_suffix("").parts).removesuffix(".__init__")
                     for p in product_python_files() if p.name != "__main__.py" and p != MODULE_FILE)
    # Every shipped module (the entry points aside) imports where the bench package cannot be imported.
    check = ("import importlib, sys; sys.modules['speckle2self.bench'] = None\n"
             f"for name in {modules!r}: importlib.import_module(name)")
    subprocess.run([sys.executable, "-c", check], check=True, cwd=MODULE_DIR)


def test_cmake_lists_only_files_that_exist():
    from speckle2self.weights import DEFAULT_WEIGHTS, card_path

    text = MODULE_CMAKE.read_text()
    shipped_later = {DEFAULT_WEIGHTS, card_path(DEFAULT_WEIGHTS)}  # the lead adds the trained model
    for entry in cmake_list(text, "MODULE_PYTHON_SCRIPTS") + cmake_list(text, "MODULE_PYTHON_RESOURCES"):
        path = MODULE_DIR / entry
        assert path.is_file() or path in shipped_later, entry


def test_extension_description_and_catalog_entry():
    text = (REPO / "CMakeLists.txt").read_text()
    for variable in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf'set\(EXTENSION_{variable} "[^"]+"\)', text), variable
    for line in ("project(Speckle2Self)", "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                 "add_subdirectory(Speckle2SelfSlicer)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                 "include(${Slicer_EXTENSION_CPACK})", 'set(EXTENSION_CATEGORY "Ultrasound")',
                 'set(EXTENSION_DEPENDS "PyTorch")'):
        assert line in text, line
    catalog = json.loads((REPO / "Speckle2Self.json").read_text())
    assert catalog["category"] == "Ultrasound" and catalog["build_dependencies"] == ["PyTorch"]
    assert catalog["scm_url"].endswith(".git") and catalog["scm_revision"]
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE "([^"]+)"\)', text).group(1)
    assert catalog["scm_url"] == homepage + ".git"


def test_icons_are_pngs_of_the_usual_sizes():
    from PIL import Image

    with Image.open(REPO / "Resources" / "Icons" / "Speckle2Self.png") as icon:
        assert (icon.format, icon.size) == ("PNG", (128, 128))
    with Image.open(MODULE_DIR / "Resources" / "Icons" / "Speckle2SelfSlicer.png") as icon:
        assert icon.format == "PNG" and icon.size[0] == icon.size[1] >= 64


def test_registered_sample_checksum_matches_the_bundled_file(source):
    sample = MODULE_DIR / "Resources" / "SampleData" / constant(source, "SAMPLE_FILE")
    assert hashlib.sha256(sample.read_bytes()).hexdigest() == constant(source, "SAMPLE_SHA256")


HEAVY = ("torch", "monai", "openvino", "nncf")
"""Packages that Slicer has not until the first Despeckle installs them, and that take seconds to import."""
LIB_DIR = MODULE_DIR / "Speckle2SelfSlicerLib"


def test_heavy_packages_are_imported_inside_functions_only():
    for path in [MODULE_FILE, *sorted(LIB_DIR.glob("*.py"))]:
        for node in ast.parse(path.read_text()).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in HEAVY for n in names), (path.name, names)


def test_the_module_its_logic_and_the_process_runner_import_without_the_heavy_packages(source):
    """Issue 27: Slicer loads the module before PyTorch and MONAI are installed (or without importing them where
    they are): the project imports at the top of the module file and every module of the logic, the separate
    process's runner among them, import with torch, MONAI, OpenVINO and NNCF blocked."""
    project = ("speckle2self", "Speckle2SelfSlicerLib")
    imports = [ast.unparse(node) for node in ast.parse(source).body if isinstance(node, (ast.Import, ast.ImportFrom))
               and (node.names[0].name if isinstance(node, ast.Import) else node.module).split(".")[0] in project]
    modules = sorted(f"Speckle2SelfSlicerLib.{p.stem}" for p in LIB_DIR.glob("*.py") if p.stem != "__init__")
    assert len(imports) >= 3 and {"Speckle2SelfSlicerLib.subprocess_job", "Speckle2SelfSlicerLib.cli_process"} <= set(
        modules)
    check = f"""
import importlib, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)

sys.meta_path.insert(0, Block())
for name in {HEAVY!r}:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        continue
    raise SystemExit(f"{{name}} was not blocked")
{chr(10).join(imports)}
for name in {modules!r}:
    importlib.import_module(name)
print(sorted({{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r})))
"""
    result = subprocess.run([sys.executable, "-c", check], cwd=MODULE_DIR, capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "[]\n"), result.stderr


def test_help_cites_the_paper(source):
    assert 'Speckle2Self: Self-Supervised Ultrasound Speckle\nReduction Without Clean Data", Medical Image ' \
           'Analysis 2025, 103755' in source
    assert 'self.parent.title = _("Speckle2Self Despeckle")' in source
    assert 'translate("qSlicerAbstractCoreModule", "Ultrasound")' in source


def test_slicer_apis_the_module_calls_exist_in_slicer_core(source):
    slicer = pytest.importorskip("slicer")
    import slicer.util

    missing = [name for name in set(re.findall(r"slicer\.util\.(\w+)", source)) if not hasattr(slicer.util, name)]
    assert not missing
    assert hasattr(slicer.vtkMRMLLayoutNode, "SlicerLayoutSideBySideView")
    assert all(hasattr(slicer, name) for name in re.findall(r"slicer\.(vtkMRML\w+)", source))
    for cls, methods in [(slicer.vtkMRMLSliceCompositeNode, ["SetBackgroundVolumeID", "SetForegroundVolumeID",
                                                             "SetLinkedControl"]),
                         (slicer.vtkMRMLSliceNode, ["RotateToVolumePlane"]),
                         (slicer.vtkMRMLSliceLogic, ["GetSliceCompositeNode", "GetSliceNode", "FitSliceToAll"])]:
        assert all(hasattr(cls, m) for m in methods), cls


def methods(source: str, class_name: str) -> dict[str, ast.FunctionDef]:
    [cls] = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == class_name]
    return {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef)}


def test_every_slot_shows_its_errors(source):
    """Issue 27: an exception raised out of a Qt slot only reaches the Python console, so each slot the panel
    connects runs inside the module's error display (a user mistake as one line, anything else with details)."""
    widget = methods(source, "Speckle2SelfSlicerWidget")
    slots = set(re.findall(r'\.connect\("[^"]+", self\.(\w+)\)', source))
    assert {"onApplyButton", "_pollJob", "onMeasure", "onDeleteModels", "showResult"} <= slots
    for name in slots:
        body = widget[name].body
        body = body[1:] if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else body
        assert len(body) == 1 and isinstance(body[0], ast.With), name
        assert ast.unparse(body[0].items[0].context_expr).startswith("self._errorsShown("), name


def test_the_in_application_test_skips_nothing_and_the_input_is_never_a_labelmap(source):
    """Issue 27: skipTest shows as an error under Reload and Test; GetFirstNodeByClass also returns labelmaps."""
    calls = {ast.unparse(n.func) for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)}
    assert "self.skipTest" not in calls and "slicer.mrmlScene.GetFirstNodeByClass" not in calls
    assert "first_volume" in calls and "installTorch" in calls


def test_the_catalog_entry_meets_the_extensions_index_rules():
    """Issue 27: what Slicer's Extensions Index checks of an entry and its repository (its own checker also clones
    the repository and downloads the pictures, which needs the network): the repository name starts with 'Slicer',
    the extension's does not and matches the description file's, every picture the extension names is in the
    repository at the catalogued revision, and there is a license file."""
    from PIL import Image

    text = (REPO / "CMakeLists.txt").read_text()
    entry = REPO / "Speckle2Self.json"
    catalog = json.loads(entry.read_text())
    owner, repository = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)\.git", catalog["scm_url"]).groups()
    assert repository.startswith("Slicer") and not entry.stem.lower().startswith("slicer")
    assert re.search(r"^project\((\w+)\)", text, re.M).group(1) == entry.stem
    raw = f"https://raw.githubusercontent.com/{owner}/{repository}/{catalog['scm_revision']}/"
    pictures = [re.search(r'set\(EXTENSION_ICONURL "([^"]+)"\)', text).group(1),
                *re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]+)"\)', text).group(1).split()]
    assert len(pictures) >= 2
    for url in pictures:
        assert url.startswith(raw), url
        with Image.open(REPO / url[len(raw):]) as picture:
            assert picture.format == "PNG" and min(picture.size) >= 128, url
    assert (REPO / "LICENSE").is_file() and b"\r" not in entry.read_bytes()
