"""Channel context: which touchpoint a call comes from (``x-omni-channel``, store, device)."""

from __future__ import annotations

from omni_runtime import context as call_context
from omni_runtime import names
from omni_runtime.errors import FieldViolation, InvalidArgument
from omni_runtime.interceptors.base import Call, CallInfo, Stage, is_infrastructure


def parse_channel(meta: dict[str, str]) -> call_context.ChannelInfo:
    """Validate the channel headers; a missing channel is UNSPECIFIED (service-to-service calls)."""
    violations: list[FieldViolation] = []
    channel = 0
    raw = meta.get(call_context.CHANNEL_KEY, "")
    if raw:
        found = call_context.channel_from_name(raw)
        if found is None:
            violations.append(
                FieldViolation(
                    call_context.CHANNEL_KEY,
                    f"unknown channel {raw!r}; expected one of "
                    + ", ".join(call_context.known_channel_names()),
                )
            )
        else:
            channel = found
    store = meta.get(call_context.STORE_KEY, "")
    if store and not names.matches("locations/{location}", store):
        violations.append(
            FieldViolation(call_context.STORE_KEY, "must be a location name like locations/{location}")
        )
    device = meta.get(call_context.DEVICE_KEY, "")
    if len(device) > 256:
        violations.append(FieldViolation(call_context.DEVICE_KEY, "must be at most 256 characters"))
    if violations:
        raise InvalidArgument(violations, reason="INVALID_CHANNEL_CONTEXT")
    return call_context.ChannelInfo(channel=channel, store=store, device=device)


class ChannelStage(Stage):
    def applies(self, info: CallInfo) -> bool:
        return not is_infrastructure(info)

    async def enter(self, call: Call) -> None:
        meta = call.meta
        call_context.current_channel.set(parse_channel(meta))
        call_context.current_request_id.set(meta.get(call_context.REQUEST_ID_KEY, ""))
