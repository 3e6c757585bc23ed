"""The API-key check on the model server's gRPC API (``serving.auth``'s Guard, metadata ``x-api-key`` or
``authorization: Bearer``).

KServe 0.21 builds its ``grpc.aio`` server inside ``GRPCServer.start`` with fixed interceptors and no hook, so
``GuardedGRPCServer.start`` is KServe's own with ``ApiKeyInterceptor`` in front; ``serve_guarded_grpc`` puts it in
the place of the one ``ModelServer`` would start (built with ``enable_grpc=False``). ServerLive, ServerReady and
ModelReady stay open, like the REST health endpoints.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent import futures
from typing import Any

import grpc
from grpc import aio
from kserve import ModelServer
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer

from serving.auth import Guard, Outcome, presented_key

SERVICE = "/inference.GRPCInferenceService/"
OPEN_METHODS = frozenset(SERVICE + m for m in ("ServerLive", "ServerReady", "ModelReady"))
GRPC_STATUS = {
    Outcome.MISSING: grpc.StatusCode.UNAUTHENTICATED,
    Outcome.INVALID: grpc.StatusCode.PERMISSION_DENIED,
    Outcome.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _refusal(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str, trailing: tuple[tuple[str, str], ...]
) -> Any:
    """A handler of the same kind as ``handler`` that aborts with ``code``; the request is never deserialized."""

    async def refuse(request: Any, context: aio.ServicerContext) -> None:
        if trailing:
            context.set_trailing_metadata(trailing)
        await context.abort(code, message)

    kind = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return kind(refuse, response_serializer=handler.response_serializer)


class ApiKeyInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses a call without a valid key within its rate before any servicer code runs."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method in OPEN_METHODS:
            return await continuation(details)
        metadata = {key: value for key, value in details.invocation_metadata or () if isinstance(value, str)}
        decision = self.guard.check(presented_key(metadata.get("x-api-key"), metadata.get("authorization")))
        handler = await continuation(details)
        if decision.outcome is Outcome.OK or handler is None:  # no such method: gRPC's own UNIMPLEMENTED
            return handler
        trailing = (("retry-after", str(decision.retry_after)),) if decision.outcome is Outcome.RATE_LIMITED else ()
        return _refusal(handler, GRPC_STATUS[decision.outcome], decision.message, trailing)


class GuardedGRPCServer(GRPCServer):  # type: ignore[misc]
    """KServe's gRPC server with the API-key check as its first interceptor."""

    def __init__(self, *args: Any, guard: Guard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = guard

    async def start(self, max_workers: int) -> None:
        """KServe 0.21's ``GRPCServer.start``, with ``ApiKeyInterceptor`` in front of KServe's interceptors."""
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(ApiKeyInterceptor(self._guard), LoggingInterceptor(), ExceptionToStatusInterceptor()),
            options=[
                ("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length")),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        self._server.add_insecure_port(f"[::]:{self._port}")
        await self._server.start()
        await self._server.wait_for_termination()


def serve_guarded_grpc(server: ModelServer, guard: Guard, max_threads: int, options: dict[str, Any]) -> None:
    """Have ``server`` (built with ``enable_grpc=False``) run a GuardedGRPCServer on its gRPC port, stopped with it
    (``ModelServer.stop`` stops ``_grpc_server``). ``options``: KServe's parsed flags (the message size caps)."""
    grpc_server = GuardedGRPCServer(
        server.grpc_port,
        server.dataplane,
        server.model_repository_extension,
        kwargs=options,
        grace_period=server.grace_period,
        guard=guard,
    )
    server._grpc_server = grpc_server
    server.servers.append(grpc_server.start(max_threads))
