"""soma's side of the handler contract, run inside the embedded interpreter.

Loading, signature checks, payload decoding and calls follow Cortex's AsyncAPI handler
rules. Rust moves the payload bytes in and turns the result into JSON (convert.rs), so the
rules for results live in one place and big integers are caught rather than rounded.
"""

import asyncio
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
import threading
import traceback
import types

INIT_ARGS = {
    "python": ({"config"}, {"metrics_client"}),
    "tensorflow": ({"tensorflow_client", "config"}, {"metrics_client"}),
}
HANDLE_ARGS = (set(), {"payload", "request_id"})


# Worker threads of one API load the module together; the first imports it, the others wait
# (a half-executed module in sys.modules would lack its Handler class).
_LOAD_LOCK = threading.RLock()


class UserError(Exception):
    """An error in the user's project, reported with its message only."""


def _check_signature(fn, method, required, optional):
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].name != "self":
        raise UserError(f'class Handler: invalid signature for method "{method}": "self" must be the first argument')
    names = [p.name for p in params[1:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for name in names:
        if name not in required and name not in optional:
            raise UserError(f'class Handler: invalid signature for method "{method}": "{name}" is not a supported argument')
    for name in sorted(required):
        if name not in names:
            raise UserError(f'class Handler: invalid signature for method "{method}": "{name}" is a required argument, but was not provided')
    return names


def load_handler(module_name, project_dir, handler_path, python_path, env, kind):
    """Imports the handler module (once per host: its workers share `module_name`) and
    returns (class, init arg names, handle arg names)."""
    with _LOAD_LOCK:
        return _load_handler(module_name, project_dir, handler_path, python_path, env, kind)


def _load_handler(module_name, project_dir, handler_path, python_path, env, kind):
    os.environ.update(env)
    for path in (project_dir, os.path.join(project_dir, python_path) if python_path else None):
        if path and path not in sys.path:
            sys.path.insert(0, path)
    file = os.path.join(project_dir, handler_path)
    module = sys.modules.get(module_name)
    if module is None:
        with open(file, encoding="utf-8") as source:
            # A regex rather than `ast`: CPython 3.11's AST validator is not thread-safe.
            count = len(re.findall(r"^class\s+Handler\b", source.read(), re.MULTILINE))
        if count > 1:
            raise UserError(f"multiple definitions for Handler class found in {handler_path}; please define it once")
        spec = importlib.util.spec_from_file_location(module_name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    cls = getattr(module, "Handler", None)
    if not inspect.isclass(cls):
        raise UserError(f"Handler class is not defined in {handler_path}")
    required, optional = INIT_ARGS[kind]
    init_args = _check_signature(cls.__init__, "__init__", required, optional)
    if not hasattr(cls, "handle_async"):
        raise UserError('class Handler: required method "handle_async" is not defined')
    handle_args = _check_signature(cls.handle_async, "handle_async", *HANDLE_ARGS)
    return cls, init_args, handle_args


class Worker:
    """One Handler instance with its own event loop (for `async def handle_async`)."""

    def __init__(self, loaded, config, tensorflow_client, metrics_client):
        cls, init_args, self.handle_args = loaded
        available = {"config": config, "tensorflow_client": tensorflow_client, "metrics_client": metrics_client}
        self.instance = cls(**{name: available[name] for name in init_args})
        self.loop = None

    def handle(self, body, content_type, request_id):
        """Runs one workload and returns the handler's result (Rust checks it is JSON)."""
        available = {"payload": _decode(body, content_type), "request_id": request_id}
        result = self.instance.handle_async(**{name: available[name] for name in self.handle_args})
        if inspect.isawaitable(result):
            # The loop belongs to this worker's thread and lives as long as the instance,
            # so tasks and clients an async handler keeps between calls stay usable.
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
            result = self.loop.run_until_complete(result)
        return result


def _decode(body, content_type):
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith("application/json"):
        try:
            return json.loads(body)
        except ValueError as error:
            raise UserError(f"the uploaded payload, with content-type {content_type}, could not be decoded to JSON: {error}") from None
    if kind.startswith("text/plain"):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"the uploaded payload, with content-type {content_type}, is not UTF-8 text: {error}") from None
    return body


class _CortexJsonFormatter(logging.Formatter):
    """Cortex's handler log lines: one JSON object, `extra={...}` flattened into it."""

    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

    def format(self, record):
        line = {
            "asctime": self.formatTime(record),
            "levelname": record.levelname,
            "message": record.getMessage(),
        }
        line.update((k, v) for k, v in vars(record).items() if k not in self._STANDARD)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def _install_cortex_logger():
    """`from cortex_internal.lib.log import logger`, as Cortex's handlers log: a `logging`
    logger writing JSON lines to stderr, beside soma's own log."""
    logger = logging.getLogger("cortex")
    if not logger.handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(_CortexJsonFormatter())
        logger.addHandler(stream)
        # Cortex's default `log_level: info` (soma does not apply another level).
        logger.setLevel(logging.INFO)
        logger.propagate = False
    for name in ("cortex_internal", "cortex_internal.lib", "cortex_internal.lib.log"):
        module = sys.modules.get(name)
        if module is None:
            module = types.ModuleType(name)
            module.__path__ = []
            sys.modules[name] = module
    sys.modules["cortex_internal"].lib = sys.modules["cortex_internal.lib"]
    sys.modules["cortex_internal.lib"].log = sys.modules["cortex_internal.lib.log"]
    sys.modules["cortex_internal.lib.log"].logger = logger


_install_cortex_logger()


def describe(error):
    """(message, traceback) of an exception; user errors have no traceback worth showing."""
    if isinstance(error, UserError):
        return str(error), None
    message = f"{type(error).__name__}: {error}"
    return message, "".join(traceback.format_exception(error))
