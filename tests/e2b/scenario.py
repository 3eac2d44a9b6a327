"""The E2B SDK scenarios of issue 7, run with the official, unmodified Python
SDK (`e2b-code-interpreter`) against a real codebox server.

The environment says where the server is (E2B_API_URL + E2B_SANDBOX_URL for
the one-URL mode, or E2B_DOMAIN for the subdomain mode) and E2B_API_KEY holds
a codebox API key. In the subdomain mode E2B_TEST_HOSTS_FILE names the hosts
file bind-mounted over /etc/hosts in the test's private mount namespace: the
sandbox's names are added to it once its id is known (glibc rereads it).

Every check raises on failure; the script exits non-zero then.
"""

import os
import sys
import time

from e2b_code_interpreter import Sandbox

try:
    from e2b import CommandExitException
except ImportError:  # older layouts
    from e2b.sandbox.commands.command_handle import CommandExitException


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok - {what}", flush=True)


def add_hosts(sandbox_id):
    hosts = os.environ.get("E2B_TEST_HOSTS_FILE")
    if not hosts:
        return
    domain = os.environ["E2B_DOMAIN"]
    # In place (append): the file is bind-mounted, replacing it would not show.
    with open(hosts, "a") as file:
        file.write(f"127.0.0.1 49983-{sandbox_id}.{domain} 49999-{sandbox_id}.{domain}\n")


def main():
    started = time.monotonic()
    sandbox = Sandbox.create(timeout=180, metadata={"suite": "e2b-py"}, envs={"FOO": "bar"})
    add_hosts(sandbox.sandbox_id)
    check(sandbox.sandbox_id.isalnum(), "create returns an alphanumeric id")
    try:
        run_code(sandbox)
        contexts(sandbox)
        files(sandbox)
        commands(sandbox)
        lifecycle(sandbox)
    finally:
        killed = sandbox.kill()
    check(killed is True, "kill returns True")
    check(Sandbox.kill(sandbox.sandbox_id) is False, "killing it again returns False")
    print(f"all python scenarios passed in {time.monotonic() - started:.1f}s", flush=True)


def run_code(sandbox):
    sandbox.run_code("x = 41")
    check(sandbox.run_code("x + 1").text == "42", "run_code keeps state across calls")
    check(sandbox.run_code("'quoted'").text == "quoted", "text/plain quotes are stripped")
    lines = []
    execution = sandbox.run_code("print('hello')\nprint('world')", on_stdout=lambda m: lines.append(m.line))
    check("".join(lines) == "hello\nworld\n", "on_stdout receives the output")
    check("".join(execution.logs.stdout) == "hello\nworld\n", "logs.stdout has the output")
    error = sandbox.run_code("1/0").error
    check(error is not None and error.name == "ZeroDivisionError", "an error has its name")
    check("division by zero" in error.value, "an error has its value")
    check("ZeroDivisionError" in error.traceback, "an error has its traceback")
    check(sandbox.run_code("import os; os.environ['FOO']").text == "bar", "envVars reach the code")
    only_here = sandbox.run_code("import os; os.environ.get('ONLY')", envs={"ONLY": "here"})
    check(only_here.text == "here", "run_code envs apply to the execution")
    chart = sandbox.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [4, 1, 9])\nplt.show()"
    )
    pngs = [result.png for result in chart.results if result.png]
    check(len(pngs) == 1 and pngs[0].startswith("iVBOR"), "a matplotlib chart comes back as png")


def contexts(sandbox):
    context = sandbox.create_code_context()
    sandbox.run_code("y = 5", context=context)
    check(sandbox.run_code("y * 2", context=context).text == "10", "a created context keeps state")
    check(sandbox.run_code("'y' in globals()").text == "False", "contexts are separate")
    if not hasattr(sandbox, "list_code_contexts"):
        print("skip - this SDK version has no list/restart/remove of contexts", flush=True)
        return
    ids = [listed.id for listed in sandbox.list_code_contexts()]
    check(context.id in ids, "list_code_contexts lists it")
    sandbox.restart_code_context(context)
    check(sandbox.run_code("'y' in globals()", context=context).text == "False", "restart clears state")
    sandbox.remove_code_context(context)
    ids = [listed.id for listed in sandbox.list_code_contexts()]
    check(context.id not in ids, "remove_code_context removes it")


def files(sandbox):
    sandbox.files.write("/home/user/a.txt", "hi")
    check(sandbox.files.read("/home/user/a.txt") == "hi", "files.write then files.read")
    names = [entry.name for entry in sandbox.files.list("/home/user")]
    check("a.txt" in names, "files.list shows the file")
    check(sandbox.files.exists("/home/user/a.txt"), "files.exists is True")
    sandbox.files.remove("/home/user/a.txt")
    check(not sandbox.files.exists("/home/user/a.txt"), "files.remove removes it")


def commands(sandbox):
    result = sandbox.commands.run("echo hi")
    check(result.stdout == "hi\n" and result.exit_code == 0, "commands.run returns stdout and 0")
    try:
        sandbox.commands.run("echo oops >&2; exit 3")
    except CommandExitException as error:
        check(error.exit_code == 3 and "oops" in error.stderr, "a non-zero exit raises CommandExitException")
    else:
        raise AssertionError("a non-zero exit did not raise")
    handle = sandbox.commands.run("sleep 60", background=True)
    check(handle.kill() is True, "a background command can be killed")


def lifecycle(sandbox):
    sandbox.set_timeout(240)
    info = sandbox.get_info()
    check(info.sandbox_id == sandbox.sandbox_id, "get_info returns the sandbox")
    check(info.metadata.get("suite") == "e2b-py", "get_info returns the metadata")
    check(info.end_at > info.started_at, "the sandbox ends after it started")
    listed = list_ids()
    check(sandbox.sandbox_id in listed, "Sandbox.list finds the sandbox")
    check(sandbox.is_running(), "is_running is True")


def list_ids():
    found = Sandbox.list()
    if isinstance(found, list):  # SDK 1.x
        return [item.sandbox_id for item in found]
    ids = []
    while found.has_next:
        ids.extend(item.sandbox_id for item in found.next_items())
    return ids


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # noqa: BLE001 - report and fail
        print(f"not ok - {type(error).__name__}: {error}", flush=True)
        raise
    sys.exit(0)
