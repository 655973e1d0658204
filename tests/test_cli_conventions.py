"""The ``anyvirt`` command as a user runs it: one process per command, exit codes and
stdout/stderr asserted, against hosts that outlive a process (a real isolated libvirtd
with the demo guest, and vcsim) and memory:// where the point is that it does not.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import anyvirt
from anyvirt import DiskSpec, VMSpec
from anyvirt.testing.plugin import unique_name

BOX_DRAWING = re.compile("[\u2500-\u257f]")


class Run:
    """One finished ``anyvirt`` process."""

    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        self.code = done.returncode
        self.out = done.stdout
        self.err = done.stderr

    def __repr__(self) -> str:
        return f"<exit {self.code}\nstdout: {self.out}\nstderr: {self.err}>"

    def error(self) -> dict[str, Any]:
        """stderr as the one JSON object ``--json`` promises (fails if it is anything else)."""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self
        parsed: dict[str, Any] = json.loads(lines[0])
        return parsed


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The caller's environment without anyvirt settings, and a data dir of its own."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ANYVIRT_", "_ANYVIRT"))}
    clean["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    clean["COLUMNS"] = "200"
    return clean


def run(env: dict[str, str], *args: str, timeout: float = 120, **extra: str) -> Run:
    done = subprocess.run([sys.executable, "-m", "anyvirt.cli.main", *args], env={**env, **extra},
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          check=False)
    return Run(done)


@pytest.fixture(scope="module")
def lv(libvirt_daemon: Any) -> str:
    uri: str = libvirt_daemon.anyvirt_uri
    return uri


@pytest.fixture(scope="module")
def demo_image(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "demo.img"
    made = run(env, "image", "demo", str(path))
    assert made.code == 0, made
    assert made.out.strip() == str(path)
    return path


@pytest.fixture(scope="module")
def api(lv: str) -> Iterator[anyvirt.Host]:
    """The same testbed through the Python API: setting the stage is not what is tested."""
    with anyvirt.connect(lv) as host:
        yield host


@pytest.fixture
def made(api: anyvirt.Host) -> Iterator[list[str]]:
    """Names of VMs a test creates on the libvirt testbed; removed afterwards, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(anyvirt.NotFound):
            vm = api.vms.get(name)
            if vm.state is not anyvirt.PowerState.STOPPED:
                vm.stop(force=True)
            vm.delete()


def blank_vm(api: anyvirt.Host, made: list[str], prefix: str, *, start: bool = False,
             description: str = "") -> str:
    """A VM with a small blank disk (no OS: it ignores ACPI), made through the API."""
    name = unique_name(prefix)
    vm = api.vms.create(VMSpec(name=name, cpus=1, memory_mib=32, disks=[DiskSpec(size_gib=0.01)],
                               description=description))
    made.append(name)
    if start:
        vm.start()
    return name


def create(env: dict[str, str], lv: str, made: list[str], prefix: str, *options: str) -> str:
    """A VM made by ``anyvirt vm create`` (where creating it is part of what is tested)."""
    name = unique_name(prefix)
    result = run(env, "vm", "create", lv, name, "--memory", "32", *options)
    assert result.code == 0, result
    made.append(name)
    return name


# -- errors: JSON, exit codes, wording -------------------------------------------------


def test_json_errors_are_one_object_on_stderr(env: dict[str, str], lv: str) -> None:
    missing = run(env, "--json", "vm", "show", lv, "no-such-vm")
    assert missing.code == 3
    assert missing.out == ""
    error = missing.error()
    assert error["type"] == "NotFound"
    assert error["exit_code"] == 3
    assert "no-such-vm" in error["message"]
    # the flag after the command, and a usage error, keep the promise too
    after = run(env, "vm", "show", lv, "no-such-vm", "--format", "json")
    assert after.code == 3 and after.error()["type"] == "NotFound"
    usage = run(env, "--json", "vm", "show")
    assert usage.code == 2
    assert usage.error() == {"type": "UsageError", "exit_code": 2,
                             "message": "missing argument VM (usage: [URI|PROFILE]... VM)"}


def test_without_json_an_error_is_one_plain_line(env: dict[str, str], lv: str) -> None:
    missing = run(env, "vm", "show", lv, "no-such-vm")
    assert missing.code == 3
    assert missing.out == ""
    assert missing.err.startswith("error: ") and missing.err.count("\n") == 1


def test_a_uri_where_a_name_belongs_is_bad_input_naming_the_argument(env: dict[str, str]) -> None:
    shown = run(env, "vm", "show", "libvirt+qemu:///system")
    assert shown.code == 2
    assert "missing argument VM after the connection URI" in shown.err
    cloned = run(env, "vm", "clone", "memory://lab", "web1")
    assert cloned.code == 2
    assert "missing argument NEW_NAME" in cloned.err
    # a URI in the middle, where the VM's name goes
    swapped = run(env, "snapshot", "create", "web1", "memory://lab")
    assert swapped.code == 2
    assert "missing argument NAME" in swapped.err


def test_hints_name_cli_flags_and_say_nothing_twice(
    env: dict[str, str], lv: str, api: anyvirt.Host, made: list[str]
) -> None:
    name = blank_vm(api, made, "hint", start=True)
    again = run(env, "vm", "start", lv, name)
    assert again.code == 4
    assert "it is running" in again.err
    assert repeated_phrase(again.err) is None
    deleting = run(env, "vm", "delete", lv, name)
    assert deleting.code == 4
    assert "`anyvirt vm stop --force`" in deleting.err
    assert "force=True" not in deleting.err and "()" not in deleting.err
    assert repeated_phrase(deleting.err) is None
    assert deleting.err.count(name) == 1  # the name once, then "it"


def repeated_phrase(message: str, words: int = 3) -> str | None:
    """A run of ``words`` words said twice in one message, if any."""
    tokens = re.findall(r"[\w'-]+", message.lower())
    seen: set[tuple[str, ...]] = set()
    for i in range(len(tokens) - words + 1):
        phrase = tuple(tokens[i:i + words])
        if phrase in seen:
            return " ".join(phrase)
        seen.add(phrase)
    return None


def test_repeated_phrase_finds_what_the_cli_must_not_say() -> None:
    assert repeated_phrase("it is running; it is already running") is None  # two words only
    assert repeated_phrase("the VM is running; the VM is running") == "the vm is"


def test_hint_when_the_system_daemon_is_not_running(env: dict[str, str]) -> None:
    result = run(env, "vms", "libvirt+qemu:///system")
    if Path("/run/libvirt/libvirt-sock").exists():  # a machine with libvirtd running
        assert result.code == 0, result
        return
    assert result.code == 6
    assert "start it" in result.err
    assert "leave the URI out" in result.err


# -- a VM that really boots: create, console, stop ---------------------------------------


def test_demo_guest_boots_shows_its_console_and_stops_gracefully(
    env: dict[str, str], lv: str, made: list[str], demo_image: Path
) -> None:
    name = create(env, lv, made, "demo", "--image", str(demo_image), "--start")
    deadline = time.monotonic() + 60
    console = run(env, "vm", "console", lv, name)
    while "ANYVIRT-GUEST-UP" not in console.out and time.monotonic() < deadline:
        time.sleep(0.5)
        console = run(env, "vm", "console", lv, name)
    assert console.code == 0, console
    assert "ANYVIRT-GUEST-UP" in console.out
    last = run(env, "vm", "console", lv, name, "--lines", "1")
    assert last.code == 0 and len(last.out.splitlines()) == 1
    stopped = run(env, "vm", "stop", lv, name)
    assert stopped.code == 0, stopped
    assert stopped.out.strip() == f"{name}: stopped"


def test_stop_of_a_guest_ignoring_acpi_says_it_waits_and_names_force(
    env: dict[str, str], lv: str, api: anyvirt.Host, made: list[str]
) -> None:
    name = blank_vm(api, made, "deaf", start=True)  # no OS: nobody hears the ACPI button
    waited = run(env, "vm", "stop", lv, name, "--timeout", "6")
    assert waited.code == 7, waited
    notice, error = waited.err.strip().splitlines()
    assert notice.startswith(f"{name}: waiting for the guest to shut down")
    assert error.startswith("error: ") and "`anyvirt vm stop --force`" in error
    forced = run(env, "vm", "stop", lv, name, "--force")
    assert forced.code == 0
    assert forced.out.strip() == f"{name}: powered off (stopped)"


def test_ctrl_c_exits_130_and_says_whether_the_platform_carries_on(
    env: dict[str, str], lv: str, api: anyvirt.Host, made: list[str]
) -> None:
    name = blank_vm(api, made, "intr", start=True)
    proc = subprocess.Popen([sys.executable, "-m", "anyvirt.cli.main", "--debug", "vm", "stop",
                             lv, name],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as from a terminal: a test runner started in the background
                            # ignores SIGINT, and its children would inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Ctrl-C once the stop is under way (its task's debug line), however long the start
    # takes on a busy machine; a timer ends a child that never gets there
    guard = threading.Timer(120, proc.kill)
    guard.start()
    seen = []
    assert proc.stderr is not None
    while (line := proc.stderr.readline()) and " started: stop " not in line:
        seen.append(line)
    guard.cancel()
    assert line, "".join(seen)
    time.sleep(0.5)  # the stop sent, the CLI waiting for the guest
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=30)
    err = "".join(seen) + line + rest
    assert proc.returncode == 130, err
    assert out == ""
    said = err.strip().splitlines()[-1]
    assert said.startswith(f"error: interrupted: stop {name} ")
    assert any(outcome in said for outcome in ("was cancelled; nothing carries on",
                                               "carries on on the platform as task",
                                               "was sent to the platform and may still complete"))


def test_console_where_the_platform_keeps_none_is_not_supported(
    env: dict[str, str], vs: tuple[str, dict[str, str], anyvirt.Host]
) -> None:
    uri, secret, _ = vs
    result = run(env, "--json", "vm", "console", uri, "DC0_H0_VM0", **secret)
    assert result.code == 5
    assert result.error()["type"] == "NotSupported"


# -- output: formats, filters, escaping ------------------------------------------------


def test_listing_formats_and_filters(env: dict[str, str], lv: str, api: anyvirt.Host,
                                    made: list[str]) -> None:
    idle = blank_vm(api, made, "idle")
    busy = blank_vm(api, made, "busy", start=True)
    piped = run(env, "vms", lv)
    assert piped.code == 0
    assert not BOX_DRAWING.search(piped.out)  # not a terminal: plain columns
    assert piped.out.splitlines()[0].split() == ["name", "state", "cpus", "memory", "node"]
    assert all(line == line.rstrip() for line in piped.out.splitlines())
    boxed = run(env, "vms", lv, "--format", "table")
    assert BOX_DRAWING.search(boxed.out)
    running = run(env, "vms", lv, "--state", "running", "--format", "names")
    assert busy in running.out.split() and idle not in running.out.split()
    tsv = run(env, "--format", "tsv", "vms", lv, "--state", "stopped")
    header, *rows = tsv.out.splitlines()
    assert header == "name\tstate\tcpus\tmemory\tnode"
    assert any(row.split("\t")[:2] == [idle, "stopped"] for row in rows)
    as_json = json.loads(run(env, "vms", lv, "--json").out)
    ids = {vm["name"]: vm["id"] for vm in as_json}
    assert ids[idle] not in piped.out  # ids only in --json and `vm show`
    (node,) = api.nodes.list()
    on_node = run(env, "vms", lv, "--node", node.name, "--format", "names")
    assert {idle, busy} <= set(on_node.out.split())
    assert node.id not in piped.out or node.id == node.name  # the node column says names
    nowhere = run(env, "vms", lv, "--node", "no-such-node")
    assert nowhere.code == 3


def test_tables_escape_control_characters(env: dict[str, str], lv: str, api: anyvirt.Host,
                                         made: list[str]) -> None:
    # what XML lets through to the platform: DEL and a right-to-left override
    name = blank_vm(api, made, "ctl", description="evil\u202edrow\x7f")
    for fmt in ("table", "plain", "tsv"):
        shown = run(env, "vm", "show", lv, name, "--format", fmt)
        assert shown.code == 0, shown
        assert "\u202e" not in shown.out and "\x7f" not in shown.out
        assert "evil\\u202edrow\\x7f" in shown.out
    # a value that the platform refuses is bad input, before anything is made
    refused = run(env, "vm", "create", lv, unique_name("ctl"), "--description", "\x1b[2J")
    assert refused.code == 2


# -- commands: reconfigure, templates, nodes, completion -----------------------------------


def test_vm_reconfigure(env: dict[str, str], lv: str, api: anyvirt.Host, made: list[str]) -> None:
    name = blank_vm(api, made, "rc")
    changed = run(env, "vm", "reconfigure", lv, name, "--cpus", "2", "--memory", "48")
    assert changed.code == 0, changed
    assert changed.out.strip() == f"{name}: 2 CPUs, 48 MiB (from the next start)"
    shown = api.vms.get(name)
    assert (shown.cpus, shown.memory_mib) == (2, 48)
    nothing = run(env, "vm", "reconfigure", lv, name)
    assert nothing.code == 2
    assert "give --cpus, --memory or both" in nothing.err


@pytest.fixture(scope="module")
def vs(vcsim_vcenter: Any) -> Iterator[tuple[str, dict[str, str], anyvirt.Host]]:
    """The vCenter simulator: its URI, the environment that logs in, and an API connection."""
    secret = {"ANYVIRT_PASSWORD": vcsim_vcenter.password}
    with anyvirt.connect(vcsim_vcenter.anyvirt_uri, password=vcsim_vcenter.password) as host:
        yield vcsim_vcenter.anyvirt_uri, secret, host


def _remove(host: anyvirt.Host, *names: str) -> None:
    for name in names:
        with contextlib.suppress(anyvirt.NotFound):
            vm = host.vms.get(name)
            if vm.state is not anyvirt.PowerState.STOPPED:
                vm.stop(force=True)
            vm.delete()


def test_templates_mark_deploy_convert(
    env: dict[str, str], vs: tuple[str, dict[str, str], anyvirt.Host]
) -> None:
    uri, secret, api = vs
    base, copy = unique_name("tpl"), unique_name("from-tpl")
    api.vms.create(VMSpec(name=base, memory_mib=32, disks=[DiskSpec(size_gib=1)]))
    try:
        marked = run(env, "template", "mark", uri, base, **secret)
        assert marked.code == 0, marked
        assert marked.out.strip() == f"{base}: now a template"
        refused = run(env, "vm", "start", uri, base, **secret)
        assert refused.code == 4
        assert "`anyvirt template deploy`" in refused.err and "clone()" not in refused.err
        deployed = run(env, "template", "deploy", uri, base, copy, "--json", **secret)
        assert deployed.code == 0, deployed
        assert json.loads(deployed.out)["name"] == copy
        converted = run(env, "template", "convert", uri, base, **secret)
        assert converted.code == 0, converted
        assert converted.out.strip() == f"{base}: now a VM (stopped)"
        assert not api.vms.get(base).template
    finally:
        _remove(api, copy, base)


def test_node_evacuate_and_maintenance(
    env: dict[str, str], vs: tuple[str, dict[str, str], anyvirt.Host]
) -> None:
    uri, secret, api = vs
    node, name = "DC0_C0_H2", unique_name("evac")
    api.vms.create(VMSpec(name=name, memory_mib=32, disks=[DiskSpec(size_gib=1)], node=node)).start()
    try:
        busy = run(env, "node", "maintenance", uri, node, "on", **secret)
        assert busy.code == 4, busy  # not empty yet
        emptied = run(env, "node", "evacuate", uri, node, "--maintenance", **secret)
        assert emptied.code == 0, emptied
        assert name in emptied.out and "host-" not in emptied.out  # node names, not ids
        assert emptied.out.strip().endswith(f"{node}: empty and in maintenance")
        assert api.nodes.get(node).maintenance
        assert api.vms.get(name).node != api.nodes.get(node).id
        back = run(env, "node", "maintenance", uri, node, "off", **secret)
        assert back.code == 0, back
        assert back.out.strip() == f"{node}: maintenance off"
        bad = run(env, "node", "maintenance", uri, node, "sideways", **secret)
        assert bad.code == 2
    finally:
        with contextlib.suppress(anyvirt.AnyvirtError):
            api.nodes.get(node).set_maintenance(False)
        _remove(api, name)


def test_completion_scripts_and_vm_names(env: dict[str, str], lv: str, api: anyvirt.Host,
                                         made: list[str]) -> None:
    for shell in ("bash", "zsh", "fish"):
        script = run(env, "completion", shell)
        assert script.code == 0, script
        assert "_ANYVIRT_COMPLETE" in script.out
    name = blank_vm(api, made, "compl")
    words = f"anyvirt vm start {lv} {name[:6]}"
    completed = run(env, timeout=60, _ANYVIRT_COMPLETE="bash_complete", COMP_WORDS=words,
                        COMP_CWORD="4")
    assert completed.code == 0, completed
    assert f"plain,{name}" in completed.out.splitlines()
    unknown = run(env, "completion", "powershell")
    assert unknown.code == 2


# -- memory:// from the command line ---------------------------------------------------


def test_a_change_on_a_memory_host_warns_that_it_ends_with_the_process(env: dict[str, str]) -> None:
    created = run(env, "vm", "create", "memory://cli-demo", "web1")
    assert created.code == 0
    assert created.out.strip() == "web1: created (stopped)"
    assert "lives in this process only" in created.err
    listed = run(env, "vms", "memory://cli-demo")
    assert listed.code == 0 and "web1" not in listed.out  # gone, as the warning said
    assert listed.err == ""  # reading changes nothing: no warning
    failed = run(env, "vm", "start", "memory://cli-demo", "web1")
    assert failed.code == 3
    assert "lives in this process only" not in failed.err  # a failure changed nothing


def test_help_has_no_raw_rest_or_python_hints(env: dict[str, str]) -> None:
    """Every command's --help, as the shell shows it: no ``double backticks`` or :roles:."""
    from anyvirt.cli.main import cli

    def commands(group: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name in getattr(group, "commands", {}):
            yield from commands(group.commands[name], [*path, name])

    paths = list(commands(cli, []))
    assert ["vm", "reconfigure"] in paths and ["template", "convert"] in paths
    assert ["node", "evacuate"] in paths and ["completion"] in paths and ["vm", "console"] in paths
    script = "; ".join(f"print(cli.main(args={[*p, '--help']!r}, standalone_mode=False))" for p in paths)
    done = subprocess.run([sys.executable, "-c", f"from anyvirt.cli.main import cli; {script}"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "Usage: " in done.stdout
    for raw in ("``", ":class:", ":func:", ":meth:", "force=True"):
        assert raw not in done.stdout, raw


def test_messages_name_the_vm_not_its_id(
    env: dict[str, str], vs: tuple[str, dict[str, str], anyvirt.Host]
) -> None:
    uri, secret, api = vs
    name = unique_name("toolless")
    vm = api.vms.create(VMSpec(name=name, memory_mib=32, disks=[DiskSpec(size_gib=1)]))
    vm.start()
    try:
        refused = run(env, "vm", "stop", uri, name, **secret)  # vcsim's guests run no VMware Tools
        assert refused.code == 4, refused
        assert f"VM {name!r}" in refused.err and vm.id not in refused.err
        assert "`anyvirt vm stop --force`" in refused.err
    finally:
        _remove(api, name)
