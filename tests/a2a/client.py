"""Drives Hearth's A2A gateway with the official Python a2a-sdk 1.x client,
over one binding, and prints one JSON report of what it saw. The Rust test
(tests/tests/a2a.rs) asserts on the report; this script judges nothing.

usage: python client.py BASE_URL JSONRPC|HTTP+JSON|GRPC|V03 [--token T]

V03 is the SDK's v0.3 compatibility client (chosen, as the SDK does, when
the JSON-RPC interface says protocol version 0.3).
"""
import argparse
import asyncio
import http.server
import json
import threading
import uuid

import grpc
import httpx

from a2a.client import A2ACardResolver, ClientCallContext, ClientCallInterceptor, ClientConfig, ClientFactory
from a2a.helpers import get_artifact_text, get_message_text
from a2a.types.a2a_pb2 import (
    CancelTaskRequest, DeleteTaskPushNotificationConfigRequest, GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest, GetTaskRequest, ListTaskPushNotificationConfigsRequest,
    ListTasksRequest, Message, Part, Role, SendMessageRequest, SubscribeToTaskRequest, TaskState,
    TaskPushNotificationConfig,
)


class Bearer(ClientCallInterceptor):
    def __init__(self, token):
        self.token = token

    async def before(self, args):
        if args.context is None:
            args.context = ClientCallContext()
        if args.context.service_parameters is None:
            args.context.service_parameters = {}
        args.context.service_parameters['Authorization'] = f'Bearer {self.token}'

    async def after(self, args):
        pass


class Hook(http.server.BaseHTTPRequestHandler):
    """A webhook that records what it is sent."""
    seen = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        Hook.seen.append({
            'token': self.headers.get('X-A2A-Notification-Token'),
            'body': json.loads(body or b'{}'),
        })
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def state(s):
    return TaskState.Name(s)


def msg(text, task_id='', context_id=''):
    return SendMessageRequest(message=Message(
        role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=text)],
        task_id=task_id, context_id=context_id))


async def send(client, text, task_id='', context_id=''):
    """Sends; returns the payload kinds seen and the last task state known."""
    kinds, task, last_status = [], None, None
    async for ev in client.send_message(msg(text, task_id, context_id)):
        kind = ev.WhichOneof('payload')
        kinds.append(kind)
        if kind == 'task':
            task = ev.task
        elif kind == 'status_update':
            last_status = ev.status_update
    tid = task.id if task is not None else last_status.task_id
    full = await client.get_task(GetTaskRequest(id=tid))
    return kinds, full


def error_of(e):
    return {'type': type(e).__name__, 'text': str(e)[:300]}


async def run(base, binding, token, hook_url):
    r = {'binding': binding}
    async with httpx.AsyncClient(timeout=30) as http:
        card = await A2ACardResolver(http, base).get_agent_card()
    r['card'] = {
        'name': card.name,
        'bindings': sorted({i.protocol_binding for i in card.supported_interfaces}),
        'streaming': card.capabilities.streaming,
        'push': card.capabilities.push_notifications,
        'extended': card.capabilities.extended_agent_card,
        'skills': [s.name for s in card.skills],
        'schemes': sorted(card.security_schemes.keys()),
    }
    v03 = binding == 'V03'
    if v03:
        binding = 'JSONRPC'
        for i in card.supported_interfaces:
            if i.protocol_binding == 'JSONRPC':
                i.protocol_version = '0.3'
    interceptors = [Bearer(token)] if token else []

    def client(streaming):
        cfg = ClientConfig(
            streaming=streaming, supported_protocol_bindings=[binding],
            grpc_channel_factory=lambda url: grpc.aio.insecure_channel(url),
            httpx_client=httpx.AsyncClient(timeout=60))
        return ClientFactory(cfg).create(card, interceptors=interceptors)

    unary, streaming = client(False), client(True)
    r['transport'] = type(unary._transport).__name__
    try:
        kinds, t = await send(unary, 'What is 17*23+4?')
        r['send'] = {'kinds': kinds, 'state': state(t.status.state),
                     'answer': [get_artifact_text(a) for a in t.artifacts], 'id': t.id}
        g = await unary.get_task(GetTaskRequest(id=t.id, history_length=1))
        r['get'] = {'state': state(g.status.state), 'history': len(g.history)}
        if not v03:
            lt = await unary.list_tasks(ListTasksRequest(page_size=50))
            r['list'] = {'count': len(lt.tasks), 'has_sent': any(x.id == t.id for x in lt.tasks),
                         'total': lt.total_size}
        kinds, t = await send(streaming, 'What is 2+3?')
        r['stream'] = {'kinds': kinds, 'state': state(t.status.state),
                       'answer': [get_artifact_text(a) for a in t.artifacts]}

        # Multi-turn, watched by a subscriber.
        kinds, t1 = await send(streaming, 'call hearth.ask_user {"question": "Which city?"}')
        turn = {'first': state(t1.status.state), 'question': get_message_text(t1.status.message)}
        seen = []

        async def watch():
            async for ev in streaming.subscribe(SubscribeToTaskRequest(id=t1.id)):
                k = ev.WhichOneof('payload')
                seen.append(k if k != 'task' else 'task:' + state(ev.task.status.state))
        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.5)
        kinds, t2 = await send(unary, 'Lisbon', t1.id, t1.context_id)
        try:
            await asyncio.wait_for(watcher, 10)
        except Exception as e:  # noqa: BLE001
            turn['subscribe_error'] = error_of(e)
        turn.update({'second': state(t2.status.state), 'same_task': t2.id == t1.id,
                     'answer': [get_artifact_text(a) for a in t2.artifacts],
                     'history': len(t2.history), 'subscribed': seen})
        r['multi_turn'] = turn

        # Push notifications on a task waiting for input.
        _, p = await send(unary, 'call hearth.ask_user {"question": "Which day?"}')
        before = len(Hook.seen)
        c = await unary.create_task_push_notification_config(TaskPushNotificationConfig(
            task_id=p.id, url=hook_url, token='tok-' + r['binding']))
        got = await unary.get_task_push_notification_config(
            GetTaskPushNotificationConfigRequest(task_id=p.id, id=c.id))
        listed = await unary.list_task_push_notification_configs(
            ListTaskPushNotificationConfigsRequest(task_id=p.id))
        await send(unary, 'Friday', p.id, p.context_id)
        for _ in range(50):
            if any(s['body'].get('task', {}).get('status', {}).get('state') == 'TASK_STATE_COMPLETED'
                   or s['body'].get('statusUpdate', {}).get('status', {}).get('state') == 'TASK_STATE_COMPLETED'
                   for s in Hook.seen[before:]):
                break
            await asyncio.sleep(0.1)
        calls = Hook.seen[before:]
        await unary.delete_task_push_notification_config(
            DeleteTaskPushNotificationConfigRequest(task_id=p.id, id=c.id))
        after = await unary.list_task_push_notification_configs(
            ListTaskPushNotificationConfigsRequest(task_id=p.id))
        r['push'] = {'got_url': got.url == hook_url, 'listed': len(listed.configs),
                     'calls': len(calls), 'tokens': sorted({s['token'] or '' for s in calls}),
                     'kinds': [next(iter(s['body']), '') for s in calls],
                     'after_delete': len(after.configs)}

        # Cancel a waiting task; cancel it again; an unknown task.
        _, w = await send(unary, 'call hearth.ask_user {"question": "Which colour?"}')
        cancel = {}
        c = await unary.cancel_task(CancelTaskRequest(id=w.id))
        cancel['state'] = state(c.status.state)
        try:
            await unary.cancel_task(CancelTaskRequest(id=w.id))
            cancel['again'] = 'no error'
        except Exception as e:  # noqa: BLE001
            cancel['again'] = error_of(e)
        try:
            await unary.get_task(GetTaskRequest(id='no-such-task'))
            cancel['unknown'] = 'no error'
        except Exception as e:  # noqa: BLE001
            cancel['unknown'] = error_of(e)
        r['cancel'] = cancel

        try:
            ext = await unary.get_extended_agent_card(GetExtendedAgentCardRequest())
            r['extended'] = [s.name for s in ext.skills]
        except Exception as e:  # noqa: BLE001
            r['extended_error'] = error_of(e)
    except Exception as e:  # noqa: BLE001
        r['fatal'] = error_of(e)
    await unary.close()
    await streaming.close()
    return r


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('base')
    ap.add_argument('binding')
    ap.add_argument('--token')
    a = ap.parse_args()
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f'http://127.0.0.1:{server.server_address[1]}/hook'
    report = await run(a.base, a.binding, a.token, hook)
    print(json.dumps(report))
    server.shutdown()


asyncio.run(main())
