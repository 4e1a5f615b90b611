"""An external agent built on the official a2a-sdk 1.x (a test peer): it
answers "echo: <input>" over JSON-RPC (at /), HTTP+JSON (at /rest) and gRPC,
with its card at /.well-known/agent-card.json. When started with --token it
requires `Authorization: Bearer <token>` on every call.

usage: python echo_agent.py [--token T]   (prints its URL once it serves)
"""
import argparse
import asyncio
import socket

import grpc
import uvicorn
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import PlainTextResponse

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler, GrpcHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import a2a_pb2_grpc
from a2a.types.a2a_pb2 import (
    AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Part, Task, TaskState, TaskStatus,
)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Echo(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        if context.current_task is None:
            await event_queue.enqueue_event(Task(
                id=context.task_id, context_id=context.context_id,
                status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED), history=[context.message]))
        up = TaskUpdater(event_queue, context.task_id, context.context_id)
        await up.start_work(up.new_agent_message([Part(text='echoing')]))
        await up.add_artifact([Part(text=f'echo: {text}')], name='echo')
        await up.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


class RequireToken(BaseHTTPMiddleware):
    def __init__(self, app, token):
        super().__init__(app)
        self.token = token

    async def dispatch(self, request, call_next):
        if request.url.path.startswith('/.well-known/') or \
                request.headers.get('authorization') == f'Bearer {self.token}':
            return await call_next(request)
        return PlainTextResponse('token required', status_code=401)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--token')
    a = ap.parse_args()
    http_port, grpc_port = free_port(), free_port()
    base = f'http://127.0.0.1:{http_port}'
    card = AgentCard(
        name='echo', description='Repeats what it is told, prefixed with "echo:".', version='1.0.0',
        supported_interfaces=[
            AgentInterface(url=f'{base}/', protocol_binding='JSONRPC', protocol_version='1.0'),
            AgentInterface(url=f'{base}/rest', protocol_binding='HTTP+JSON', protocol_version='1.0'),
            AgentInterface(url=f'127.0.0.1:{grpc_port}', protocol_binding='GRPC', protocol_version='1.0'),
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=['text/plain'], default_output_modes=['text/plain'],
        skills=[AgentSkill(id='echo', name='echo', description='Echoes its input.', tags=['echo'])],
    )
    handler = DefaultRequestHandler(agent_executor=Echo(), task_store=InMemoryTaskStore(), agent_card=card)
    app = Starlette(routes=[
        *create_agent_card_routes(card),
        *create_jsonrpc_routes(handler, '/'),
        *create_rest_routes(handler, path_prefix='/rest'),
    ])
    if a.token:
        app.add_middleware(RequireToken, token=a.token)
    gserver = grpc.aio.server()
    a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), gserver)
    gserver.add_insecure_port(f'127.0.0.1:{grpc_port}')
    await gserver.start()
    server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=http_port, log_level='warning'))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # announce the URL only once it answers
        await asyncio.sleep(0.02)
    print(base, flush=True)
    await serving


asyncio.run(main())
