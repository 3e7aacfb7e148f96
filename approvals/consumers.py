"""The one websocket: a logged-in user hears about the tasks they may see."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from approvals.live import MONITORING, OPERATORS, user_group
from monitoring.access import can_monitor


class LiveConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.joined = [user_group(user.pk)]
        if await sync_to_async(user.has_perm)("approvals.view_approvaltask"):
            self.joined.append(OPERATORS)  # operators see every task
        if await sync_to_async(can_monitor)(user):
            self.joined.append(MONITORING)
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Browsers only listen; anything they send is ignored."""

    async def live_event(self, event: dict[str, Any]) -> None:
        await self.send_json({key: event[key] for key in ("event", "task", "kind") if key in event})
