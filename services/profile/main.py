"""Wiring of the profile service into the shared runtime (nothing else lives here)."""

from __future__ import annotations

import grpc

from omni.profile.v1 import profile_service_pb2_grpc
from omni_runtime.server import Runtime, ServiceDefinition
from services.profile.adapters.peers import Peers
from services.profile.api import ProfileServicer
from services.profile.config import ProfileConfig
from services.profile.events import SUBJECTS, Consumers, mappings
from services.profile.follow import Follow
from services.profile.interactions import Interactions
from services.profile.journeys import Journeys
from services.profile.merges import Merges
from services.profile.privacy import Privacy
from services.profile.profiles import Profiles
from services.profile.segment_admin import SegmentAdmin
from services.profile.segments import Segments
from services.profile.timeline import Timeline
from services.profile.views import Views


async def _register(server: grpc.aio.Server, runtime: Runtime) -> None:
    if runtime.db is None or runtime.outbox is None:
        raise RuntimeError("the profile service needs its database and the event bus")
    config = ProfileConfig.from_settings(runtime.settings)
    segments = Segments(runtime.db, pass_interval=config.time_pass_interval)
    timeline = Timeline(segments)
    profiles = Profiles(runtime, segments)
    merges = Merges(runtime, profiles, segments)
    privacy = Privacy(runtime, segments, config.peers)
    peers = Peers(runtime.peers)
    servicer = ProfileServicer(
        config,
        profiles,
        Interactions(runtime, timeline),
        Views(runtime, config, peers),
        SegmentAdmin(runtime, segments),
        merges,
        privacy,
        Journeys(runtime.db),
        peers,
    )
    profile_service_pb2_grpc.add_ProfileServiceServicer_to_server(servicer, server)
    follow = Follow(profiles, merges, privacy)
    consumers = Consumers(timeline, follow.identity, follow.receipt)
    for producer, mapping in mappings(consumers).items():
        runtime.consume_batches(
            f"{producer}-events", SUBJECTS[producer], consumers.handler(mapping), batch=config.consumer_batch
        )
    runtime.background.append(segments.run)


SERVICE = ServiceDefinition(
    name="profile", grpc_services=["omni.profile.v1.ProfileService"], register=_register
)
