"""The documentation builds with ``mkdocs build --strict``, and its generated pages are complete."""

from __future__ import annotations

import functools
import html
import http.server
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import attrs
import pytest

from anyvirt import registry
from anyvirt.cli.matrix import columns, support_matrix_markdown
from anyvirt.model import Capability

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def installed_schemes() -> list[str]:
    """Schemes of installed backends that load (the build runs in its own process, so
    backends that other tests register by hand in this one do not count)."""
    loadable = []
    for ep in entry_points(group=registry.GROUP):
        try:
            ep.load()
        except Exception:
            continue
        loadable.append(ep.name)
    return loadable


def _text(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))


def test_matrix_page_lists_every_installed_backend_and_capability(site: Path) -> None:
    text = _text(site / "support-matrix" / "index.html")
    assert "generated: support-matrix" not in text
    schemes = installed_schemes()
    assert "memory" in schemes
    for scheme in schemes:
        assert scheme in text, f"backend {scheme} missing from the matrix"
    for capability in Capability:
        assert capability.value in text, f"capability {capability.value} missing from the matrix"


def test_every_capability_says_what_it_means() -> None:
    from anyvirt.cli.matrix import describe

    assert [c.value for c in Capability if not describe(c)] == []


def test_matrix_cells_follow_the_declared_capabilities() -> None:
    table = support_matrix_markdown()
    cols = columns()
    for capability in Capability:
        line = next(row for row in table.splitlines() if row.startswith(f"| `{capability.value}` |"))
        cells = [cell.strip() for cell in line.strip("|").split("|")][3:]
        # "if [n]": offered only where the driver's condition n holds
        assert [cell if not cell.startswith("if [") else "if" for cell in cells] == [
            ("if" if capability in c.conditions else "yes") if capability in c.capabilities
            else "-" for c in cols]


def test_cli_page_has_the_help_of_every_command(site: Path) -> None:
    text = _text(site / "cli" / "index.html")
    assert "generated: cli-help" not in text
    for command in ("anyvirt vm stop", "anyvirt snapshot list", "anyvirt testbed libvirt",
                    "anyvirt capabilities", "Exit codes"):
        assert command in text


def test_api_reference_is_rendered_from_docstrings(site: Path) -> None:
    text = _text(site / "reference" / "host" / "index.html")
    assert "Connect to a virtualization platform" in text
    memory_page = (site / "reference" / "memory" / "index.html").read_text(encoding="utf-8")
    assert 'id="anyvirt.memory.inject_failure"' in memory_page


# -- the reference a newcomer learns from ------------------------------------------------

#: Host members for backends and the gate, documented on the writing-a-backend page only
SPI_MEMBERS = frozenset({"driver", "gate", "run", "reserve_capacity", "require"})


def _anchors(site: Path, *pages: str) -> set[str]:
    found: set[str] = set()
    for page in pages:
        for path in (site / page).rglob("*.html"):
            found |= set(re.findall(r'id="(anyvirt[^"]*)"', path.read_text(encoding="utf-8")))
    return found


def _public_members(cls: type) -> set[str]:
    """Public class members, plus the attributes ``__init__`` sets (``host.vms``, ``vm.snapshots``)."""
    members = {name for name in dir(cls) if not name.startswith("_")}
    if "__init__" in vars(cls):
        source = inspect.getsource(cls.__init__)
        members |= set(re.findall(r"self\.([a-z][a-z_]*)\s*[:=]", source))
    return members - SPI_MEMBERS


def test_reference_has_every_public_name_every_handle_member_and_every_model(site: Path) -> None:
    import anyvirt
    from anyvirt import host, model, node, snapshot, tasks, vm

    anchors = _anchors(site, "reference")
    missing = []
    for name in anyvirt.__all__:
        obj = getattr(anyvirt, name)
        if f"{obj.__module__}.{obj.__qualname__}" not in anchors:
            missing.append(name)
    handles = (host.Host, host.VMCollection, host.NodeCollection, vm.VM, snapshot.Snapshot,
               snapshot.SnapshotCollection, node.Node, tasks.Task)
    for cls in handles:
        for member in sorted(_public_members(cls)):
            if f"{cls.__module__}.{cls.__qualname__}.{member}" not in anchors:
                missing.append(f"{cls.__qualname__}.{member}")
    for name, obj in vars(model).items():
        is_model = inspect.isclass(obj) and attrs.has(obj) and obj.__module__ == model.__name__
        if is_model and f"{model.__name__}.{name}" not in anchors:
            missing.append(name)
    assert missing == []
    for wanted in ("anyvirt.host.Host.vms", "anyvirt.vm.VM.state", "anyvirt.snapshot.Snapshot.parent",
                   "anyvirt.model.HostInfo", "anyvirt.model.NicInfo", "anyvirt.model.Firmware"):
        assert wanted in anchors


def test_spi_internals_are_on_the_backend_page_not_in_the_user_reference(site: Path) -> None:
    user = _anchors(site, "reference")
    backend = _anchors(site, "writing-a-backend")
    for spi in ("anyvirt.driver.Driver", "anyvirt.tasks.Job", "anyvirt.target.Target"):
        assert spi in backend
        assert spi not in user
    for member in SPI_MEMBERS:
        assert f"anyvirt.host.Host.{member}" not in user


def _table_rows(page: Path) -> list[str]:
    rows = re.findall(r"<tr>(.*?)</tr>", page.read_text(encoding="utf-8"), re.S)
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", row)).split()) for row in rows]


def test_the_reference_says_what_parameters_mean_and_what_operations_raise(site: Path) -> None:
    page = site / "reference" / "vm" / "index.html"
    text = _text(page)
    assert "generated: operation-errors" not in text
    assert "Parameters you meet everywhere" in text
    rows = _table_rows(page)
    assert any(row.startswith("timeout seconds the whole operation may take") for row in rows)
    for call in ("vm.start()", "vm.clone(name", "snapshot.revert()", "node.set_maintenance(on)"):
        row = next(row for row in rows if row.startswith(call))
        assert "NotSupported" in row or "InvalidState" in row, row
    clone = next(row for row in rows if row.startswith("vm.clone(name"))
    assert "AlreadyExists" in clone and "CapacityExceeded" in clone


def test_no_raw_rest_roles_and_no_cdn_assets_in_the_html(site: Path) -> None:
    for page in site.rglob("*.html"):
        html_text = page.read_text(encoding="utf-8")
        assert not re.search(r":(class|mod|func|meth|attr|exc|data|obj):", _text(page)), page
        for asset in re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="([^"]+)"', html_text):
            assert not asset.startswith(("http:", "https:", "//")), (page, asset)


def test_the_support_matrix_shows_python_names_beside_values(site: Path) -> None:
    text = _text(site / "support-matrix" / "index.html")
    assert "Capability.LINKED_CLONE" in text and "clone.linked" in text
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "| `clone.linked` | `Capability.LINKED_CLONE` |" in readme


def test_the_uris_page_lists_the_embedded_default_and_the_no_daemon_hint(site: Path) -> None:
    text = _text(site / "uris-and-credentials" / "index.html")
    assert "libvirt+qemu:///embed?root=" in text
    assert "~/.local/share/anyvirt/qemu-embed" in text
    assert "start libvirtd, or leave the URI out" in text


def test_the_readme_states_the_real_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from anyvirt.connect import build_target

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stated = readme[readme.index("`anyvirt.connect()` with no URI"):]
    order = [stated.index(what) for what in ("profile", "`$ANYVIRT_URI`", "local QEMU", "memory://default")]
    assert order == sorted(order)
    # and that is the order the code applies: a profile's URI beats $ANYVIRT_URI
    config = tmp_path / "config.toml"
    config.write_text('[profiles.lab]\nuri = "memory://from-profile"\n')
    monkeypatch.setenv("ANYVIRT_CONFIG", str(config))
    monkeypatch.setenv("ANYVIRT_URI", "memory://from-env")
    monkeypatch.delenv("ANYVIRT_PROFILE", raising=False)
    assert "from-profile" in build_target(profile="lab").safe_uri
    assert "from-env" in build_target().safe_uri


def test_cli_examples_use_uris_that_persist() -> None:
    cli_page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    examples = "\n".join(re.findall(r"```sh\n(.*?)```", cli_page, re.S))
    assert "anyvirt vm create web1" in examples
    assert "memory://" not in examples  # each command is a process: memory:// would not persist


# -- in a real browser: what a newcomer sees first ------------------------------------------

#: the pages a newcomer reads first, and what each must show rendered
FIRST_PAGES = {
    "": ("pre",),                                # home: the example
    "getting-started/": ("pre",),
    "cli/": ("table", "pre"),
    "uris-and-credentials/": ("table", "pre"),
    "support-matrix/": ("table",),
    "concepts/": ("table",),                     # the gate's table, as wide as the matrix
    "reference/vm/": ("table",),
}

#: added to a copy of each page: once the page has loaded, it writes into the page's body, as
#: JSON, how every table and code block of the content was laid out and styled
_PROBE = """<script>
window.addEventListener("load", () => {
  const main = document.querySelector('[role="main"]') || document.body;  // not hidden dialogs
  const box = (e) => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
  const out = {
    title: document.title,
    tables: [...main.querySelectorAll("table")].map(t => ({size: box(t), rows: t.rows.length,
              border: getComputedStyle(t.querySelector("td,th") || t).borderTopStyle})),
    code: [...main.querySelectorAll("pre code")].map(c => ({size: box(c),
              font: getComputedStyle(c).fontFamily, text: c.textContent.length,
              tokens: c.querySelectorAll("span[class]").length,
              lang: (c.closest("[class*=language-]") || c).className})),
    // what sticks out of the window: the page's own width, and each table's right edge
    page: [document.documentElement.scrollWidth, window.innerWidth],
    right: [...main.querySelectorAll("table")].map(t => t.getBoundingClientRect().right),
    // the top bar's entries: their distinct tops are the rows the bar wraps to
    nav_rows: new Set([...document.querySelectorAll(".navbar-nav > li")]
              .map(li => Math.round(li.getBoundingClientRect().top))).size,
    css: [...document.styleSheets].length,
  };
  document.body.setAttribute("data-probe", JSON.stringify(out));
});
</script>"""

#: screenshots of these, for a person to look at (the probe above is what asserts)
SCREENSHOTS = ("getting-started/", "cli/", "support-matrix/")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The built site over HTTP on loopback, with a probing copy of each first page."""
    for page in FIRST_PAGES:
        original = (site / page / "index.html").read_text(encoding="utf-8")
        (site / page / "_probe.html").write_text(original.replace("</body>", _PROBE + "</body>"),
                                                 encoding="utf-8")
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "headless Chromium is needed: bash scripts/system-packages.sh test installs it"
    # a profile of its own: with the shared one, a Chromium already running elsewhere would be
    # handed the page instead; --timeout bounds the page's own time
    with tempfile.TemporaryDirectory(prefix="anyvirt-chromium-") as profile:
        return subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--hide-scrollbars", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", f"--user-data-dir={profile}",
             "--virtual-time-budget=5000", *args],
            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        )


def test_first_pages_render_their_tables_and_code_in_a_browser(served: str, tmp_path: Path) -> None:
    probes = {}
    for page in FIRST_PAGES:
        done = _chromium("--dump-dom", "--window-size=1280,900", f"{served}{page}_probe.html")
        match = re.search(r'data-probe="([^"]*)"', done.stdout)
        assert match, (page, done.stderr[-2000:])
        probes[f"/{page}"] = json.loads(html.unescape(match.group(1)))
    for page, wanted in FIRST_PAGES.items():
        probe = probes[f"/{page}"]
        assert probe["css"] >= 1 and probe["title"], (page, probe)
        if "table" in wanted:
            assert probe["tables"], (page, probe)
            for table in probe["tables"]:
                width, height = table["size"]
                assert width > 100 and height > 16 * table["rows"], (page, table)
                assert table["border"] != "none", (page, table)  # styled, not raw text
        if "pre" in wanted:
            assert probe["code"], (page, probe)
            for code in probe["code"]:
                assert code["size"][1] > 10 and code["text"] > 0, (page, code)
                assert "mono" in code["font"].lower(), (page, code)
                if re.search(r"language-(python|sh|bash|console|toml|yaml|json)\b", code["lang"]):
                    assert code["tokens"] > 0, (page, code)  # highlighted, by the local Pygments
        # at 1,280 px nothing is wider than the window: wide tables scroll in their own box
        scroll_width, window_width = probe["page"]
        assert window_width == 1280 and scroll_width <= window_width, (page, probe["page"])
        assert all(right <= window_width for right in probe["right"]), (page, probe["right"])
        assert probe["nav_rows"] == 1, (page, probe["nav_rows"])
    # kept after the run, for a person to look at: $ANYVIRT_TEST_ARTEFACTS or .test-artefacts/
    shots = Path(os.environ.get("ANYVIRT_TEST_ARTEFACTS") or ROOT / ".test-artefacts") / "docs-site"
    shots.mkdir(parents=True, exist_ok=True)
    for page in SCREENSHOTS:
        shot = shots / f"{page.strip('/').replace('/', '-') or 'home'}.png"
        done = _chromium(f"--screenshot={shot}", "--window-size=1280,1600", f"{served}{page}")
        assert shot.is_file() and shot.stat().st_size > 20_000, (page, done.stderr[-2000:])
