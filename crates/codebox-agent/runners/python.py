# codebox python runner: one long-lived interpreter of a context, driven by the agent.
#
# Channel (fd CODEBOX_RUNNER_FD, a socket): requests from the agent are NUL-terminated
# fields "x", seq, number of env pairs, name, value, ..., code; events to the agent are
# JSON lines: ready, start{seq}, result{main,data,truncated}, error{name,value,
# traceback}, done{seq}. stdout/stderr stay the user's real output (pipes the agent
# reads); nothing is ever marked inside them. SIGINT raises KeyboardInterrupt only while
# a cell runs. With IPython importable (and CODEBOX_PYTHON_PLAIN unset) cells run in an
# in-process InteractiveShell; otherwise in a plain ast-based executor.


def _codebox_runner():
    import base64
    import builtins
    import io
    import json
    import os
    import signal
    import sys
    import types

    fd = int(os.environ.pop("CODEBOX_RUNNER_FD", "3"))
    max_result = int(os.environ.pop("CODEBOX_MAX_RESULT", str(8 << 20)))
    preload = os.environ.pop("CODEBOX_PYTHON_PRELOAD", "")
    plain = os.environ.pop("CODEBOX_PYTHON_PLAIN", "") == "1"
    os.environ.pop("CODEBOX_RUNNER_LANGUAGE", None)
    state = {"running": False, "error": False}
    pending = bytearray()

    def send(event):
        data = (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8", "replace")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def field():
        while True:
            end = pending.find(b"\0")
            if end >= 0:
                value = bytes(pending[:end])
                del pending[: end + 1]
                return value.decode("utf-8", "replace")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                os._exit(0)
            pending.extend(chunk)

    def emit(data, main, truncated=False):
        clean = {}
        for mime, value in data.items():
            if isinstance(value, (bytes, bytearray)):
                value = base64.b64encode(value).decode("ascii")
            elif not isinstance(value, str):
                value = json.dumps(value, default=repr)
            clean[str(mime)] = value
        size = sum(len(k) + len(v) for k, v in clean.items())
        if size > max_result:
            text = clean.get("text/plain", "")[:65536]
            clean = {"text/plain": text + "\n[result of %d bytes over the cap]" % size}
            truncated = True
        send({"t": "result", "main": main, "data": clean, "truncated": truncated})

    def error(name, value, traceback_text):
        state["error"] = True
        send({"t": "error", "name": name, "value": value, "traceback": traceback_text})

    reprs = (
        ("text/html", "_repr_html_"),
        ("text/markdown", "_repr_markdown_"),
        ("image/svg+xml", "_repr_svg_"),
        ("image/png", "_repr_png_"),
        ("image/jpeg", "_repr_jpeg_"),
        ("text/latex", "_repr_latex_"),
        ("application/json", "_repr_json_"),
    )

    def bundle(obj):
        data = {}
        if not isinstance(obj, type):
            for mime, name in reprs:
                try:
                    method = getattr(obj, name, None)
                    value = method() if callable(method) else None
                except Exception:
                    continue
                if isinstance(value, tuple):
                    value = value[0]
                if value is not None:
                    data[mime] = value
        try:
            data["text/plain"] = repr(obj)
        except Exception as exc:
            data["text/plain"] = "<unrepresentable object: %s>" % type(exc).__name__
        return data

    def flush_figures():
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return
        try:
            for number in pyplot.get_fignums():
                figure = pyplot.figure(number)
                buffer = io.BytesIO()
                figure.savefig(buffer, format="png", bbox_inches="tight")
                emit({"image/png": buffer.getvalue(), "text/plain": repr(figure)}, False)
            pyplot.close("all")
        except Exception as exc:
            sys.stderr.write("codebox: a figure could not be rendered: %r\n" % (exc,))

    def on_sigint(signum, frame):
        if state["running"]:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        sys.stdout.reconfigure(line_buffering=True)
        sys.stderr.reconfigure(line_buffering=True)
    except Exception:
        pass
    import warnings

    warnings.filterwarnings("ignore", message=".*non-interactive.*cannot be shown")

    run = None if plain else ipython_executor(emit, error, sys)
    if run is None:
        run = plain_executor(emit, error, bundle, builtins, sys, types)
    if preload:
        run(preload, 0)
        state["error"] = False
    send({"t": "ready"})
    while True:
        kind = field()
        if kind != "x":
            continue
        seq = field()
        pairs = int(field() or "0")
        env = [(field(), field()) for _ in range(pairs)]
        code = field()
        saved = [(name, os.environ.get(name)) for name, _ in env]
        os.environ.update(env)
        state["error"] = False
        send({"t": "start", "seq": int(seq)})
        try:
            state["running"] = True
            run(code, int(seq))
        except KeyboardInterrupt:
            error("KeyboardInterrupt", "", "KeyboardInterrupt")
        finally:
            state["running"] = False
        try:
            flush_figures()
            for name, old in saved:
                if old is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = old
            sys.stdout.flush()
            sys.stderr.flush()
        except KeyboardInterrupt:
            pass
        send({"t": "done", "seq": int(seq)})


def plain_executor(emit, error, bundle, builtins, sys, types):
    """Runs cells without IPython: all statements, then the last expression's value."""
    import ast
    import linecache
    import traceback

    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    namespace = main.__dict__
    counter = [0]

    def display(*objects, **_ignored):
        for obj in objects:
            emit(bundle(obj), False)

    builtins.display = display

    def report(exc):
        tb = exc.__traceback__
        # Skip the runner's own frames: the user sees only their cells.
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell"):
            tb = tb.tb_next
        lines = traceback.format_exception(type(exc), exc, tb)
        # The runner itself is `<string>` (python3 -c): its frames (the SIGINT handler)
        # have no source line, so dropping the "File" line drops the whole frame.
        text = "".join(line for line in lines if not line.startswith('  File "<string>"'))
        error(type(exc).__name__, str(exc), text)

    def run(code, seq):
        counter[0] += 1
        filename = "<cell %d>" % counter[0]
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        try:
            flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
            tree = ast.parse(code, filename, "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            value = evaluate(compile(tree, filename, "exec", flags=flags))
            if last is not None:
                value = evaluate(compile(last, filename, "eval", flags=flags))
                if value is not None:
                    namespace["_"] = value
                    emit(bundle(value), True)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt included
            report(exc)

    def evaluate(code_object):
        result = eval(code_object, namespace)
        if code_object.co_flags & 0x80:  # CO_COROUTINE: top-level await
            import asyncio

            result = asyncio.get_event_loop_policy().get_event_loop().run_until_complete(result)
        return result

    return run


def ipython_executor(emit, error, sys):
    """An in-process IPython InteractiveShell whose display goes to the agent."""
    try:
        from IPython.core.displayhook import DisplayHook
        from IPython.core.displaypub import DisplayPublisher
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config
    except Exception:
        return None

    class Hook(DisplayHook):
        def start_displayhook(self):
            pass

        def write_output_prompt(self):
            pass

        def write_format_data(self, format_dict, md_dict=None):
            emit(format_dict, True)

        def finish_displayhook(self):
            sys.stdout.flush()

    class Publisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
            emit(data, False)

        def clear_output(self, wait=False):
            pass

    class Shell(InteractiveShell):
        displayhook_class = Hook
        display_pub_class = Publisher

        def _showtraceback(self, etype, evalue, stb):
            name = getattr(etype, "__name__", "Error")
            error(name, str(evalue), "\n".join(stb))

    config = Config()
    config.HistoryManager.enabled = False
    shell = None
    for colors in ("nocolor", "NoColor"):
        config.InteractiveShell.colors = colors
        try:
            shell = Shell.instance(config=config)
            break
        except Exception:
            Shell.clear_instance()
    if shell is None:
        return None

    def run(code, seq):
        # Errors reach the agent through Shell._showtraceback.
        shell.run_cell(code, store_history=True)

    return run


_codebox_runner()
