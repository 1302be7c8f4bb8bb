"""Invocations: webtask -> compiler -> sandbox -> envelope, and the log records of each.

No HTTP here: the endpoint (wtpy.server._invoke) turns a request into a HookRequest, asks
for the webtask and the envelope, and writes the answer. Refusals before the hook runs
(an unusable body, a compiler's refusal) still get their summary record (`refused`).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from wtpy.compilers import Compiler, HookRequest, WebtaskContext, error_envelope, get_compiler
from wtpy.contract import valid_name
from wtpy.sandbox import ArgumentsNotEncodable
from wtpy.storage import Webtask

from ._errors import InvalidName
from ._logs import envelope_error
from ._runtime import Runtime
from ._webtasks import COMPILER_META, hook_timeout, not_found

__all__ = ["TOO_DEEP", "Invocations"]

TOO_DEEP = "Request payload is nested too deeply to pass to the extensibility point"


class Invocations:
    """Runs webtasks for the invocation endpoint; confined to the server's event loop."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def find(self, container: str, name: str) -> Webtask:
        """The webtask to run: InvalidName or NotFound when there is none."""
        runtime = self.runtime
        webtask = runtime.cached(container, name)  # only valid names are ever stored
        if webtask is None:
            if not (valid_name(container) and valid_name(name)):
                raise InvalidName("Invalid container or webtask name")
            webtask = await runtime.get(container, name)
            if webtask is None:
                raise not_found(container, name)
        return webtask

    async def invoke(
        self, webtask: Webtask, request: HookRequest, request_id: str, started: float
    ) -> bytes:
        """The envelope for one invocation (the compiler's refusal, or the hook's outcome)."""
        compiler_name = webtask.meta.get(COMPILER_META, "")
        compiler = get_compiler(compiler_name)
        if compiler is None:
            # The management API refuses unknown compilers; this guards data written by another version.
            envelope = error_envelope(
                "Error", f"Unknown extensibility point compiler {compiler_name!r}"
            )
            self.refused(webtask, request_id, started, envelope_error(envelope))
            return envelope
        context = WebtaskContext(webtask.container, webtask.name, webtask.meta, webtask.secrets)
        prepared = compiler.prepare(request, context)
        if isinstance(prepared, bytes):
            self.refused(webtask, request_id, started, envelope_error(prepared))
            return prepared
        return await self._run(
            webtask, compiler, compiler_name, prepared.args, prepared.order, request_id, started
        )

    async def _run(
        self,
        webtask: Webtask,
        compiler: Compiler,
        compiler_name: str,
        args: dict[str, Any],
        order: tuple[str, ...],
        request_id: str,
        started: float,
    ) -> bytes:
        runtime = self.runtime
        settings = runtime.settings
        try:
            outcome = await runtime.pool.run(
                key=webtask.code_hash,
                code=webtask.code,
                filename=f"<webtask {webtask.container}/{webtask.name}>",
                args=args,
                order=order,
                timeout=hook_timeout(webtask.meta, settings.default_timeout, settings.max_timeout),
                container=webtask.container,
                on_logs=lambda lines: runtime.logs.publish_lines(
                    webtask.container, webtask.name, request_id, lines, webtask.secrets
                ),
            )
        except ArgumentsNotEncodable:
            # The arguments come from orjson.loads, which reads 1024 levels of nesting but
            # writes about 254: a deeper body cannot be passed on. An error envelope, not a 500.
            self.refused(webtask, request_id, started, TOO_DEEP)
            return compiler.failure(
                {"name": "Error", "message": TOO_DEEP, "stack": f"Error: {TOO_DEEP}"}
            )
        if outcome.outcome == "success":
            # The result's JSON text as the worker wrote it, spliced into the envelope unparsed.
            result = None if outcome.result_json is None else orjson.Fragment(outcome.result_json)
            envelope = compiler.success(result, outcome.has_result)
            if not outcome.logs:
                runtime.logs.publish_success(
                    webtask.container, webtask.name, request_id, compiler_name, outcome.duration_ms
                )
                return envelope
        else:
            envelope = compiler.failure(
                outcome.error or {"name": "Error", "message": "Unknown error"}
            )
        runtime.logs.publish_invocation(
            container=webtask.container,
            name=webtask.name,
            request_id=request_id,
            compiler=compiler_name,
            outcome=outcome.outcome,
            duration_ms=outcome.duration_ms,
            logs=outcome.logs,
            error=outcome.error if outcome.outcome != "success" else None,
            secrets=webtask.secrets,
        )
        return envelope

    def refused(self, webtask: Webtask, request_id: str, started: float, error: object) -> None:
        """Summary record for an invocation that ended before the hook ran (outcome error)."""
        self.runtime.logs.publish_invocation(
            container=webtask.container,
            name=webtask.name,
            request_id=request_id,
            compiler=webtask.meta.get(COMPILER_META, ""),
            outcome="error",
            duration_ms=(time.perf_counter() - started) * 1000,
            error=error,  # type: ignore[arg-type]
            secrets=webtask.secrets,
        )
