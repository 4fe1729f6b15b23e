"""``ostinato serve --model DIR``: the network service (WebSocket streams, REST, dashboard)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

from ostinato.profiles import Profile, apply_profile, profile_names

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add the ``serve`` subcommand."""
    p = sub.add_parser("serve", help="run the network service (WebSocket streaming, REST API, dashboard)")
    p.add_argument("--model", type=Path, required=True, help="exported model directory (loaded at start-up)")
    p.add_argument("--model-name", default=None, help="name of that model in the API (default: the directory name)")
    p.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda", "tensorrt"))
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (0: any free port)")
    p.add_argument("--token-file", type=Path, default=None, help="file holding the bearer token clients must send")
    p.add_argument("--library", type=Path, default=None, help="SQLite pattern library that matches are recorded in")
    p.add_argument("--max-streams", type=int, default=None, help="concurrent streams (default 64; 4 with --profile edge)")
    p.add_argument("--profile", default="default", choices=profile_names(),
                   help="edge: one core (1 thread, batch 1, 0.5 s hop + 0.5 s context, short queues, 4 streams, "
                        "120 s matcher history; docs/edge.md). Options given explicitly win")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="browser origin allowed besides the service's own (repeatable; '*' allows all)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="browser origin (scheme://host[:port]) that may call the REST API and open the WebSocket "
                        "cross-origin: CORS headers + preflight (repeatable; '*' allows all; default: same-origin only)")
    p.add_argument("--media-dir", type=Path, default=None, help="audio files the dashboard may stream server-side")
    p.add_argument("--match-buffer-s", type=float, default=None, help="audio history each stream's matcher searches (default 120)")
    p.add_argument("--match-min-evidence", type=float, default=None, metavar="E",
                   help="pair evidence a log-mel repeat needs (default 0.6, 0.45 for aligned pairs; this sets both): "
                        "0.8 gives fewer false alarms and less recall under noise (docs/matcher.md, Operating points)")
    p.add_argument("--idle-timeout-s", type=float, default=60.0, help="end streams silent for this long")
    p.add_argument("--resume-grace-s", type=float, default=30.0, help="how long a dropped stream waits to be resumed")
    p.add_argument("--describe-model", type=Path, default=None, metavar="GAMA_DIR",
                   help="describe new patterns (and POST /v1/patterns/{id}/describe) with this GAMA export (docs/gama.md)")
    p.add_argument("--describe-prompt", default=None, help='instruction for --describe-model (default "Describe the audio.")')
    p.add_argument("--describe-ring-s", type=float, default=None,
                   help="audio kept per stream for descriptions (default: --match-buffer-s + 11, at least 60; 32 kB/s per stream)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate the options, warn about exposed binds, serve until SIGTERM/SIGINT."""
    from ostinato.auth import load_token
    from ostinato.limits import ServiceLimits
    from ostinato.models import ModelConfig
    from ostinato.server import ServerConfig, is_loopback, serve
    from ostinato.stream.errors import ConfigError

    token = load_token(args.token_file) if args.token_file is not None else None
    if token is None and not is_loopback(args.host):
        print(
            f"warning: binding {args.host} without --token-file: anyone who can reach this port can stream audio, "
            "load models and read the library. Use --token-file FILE (and TLS in front) when exposing the service.",
            file=sys.stderr,
        )
    profile = apply_profile(args, args.profile, {"max_streams": "max_streams", "match_buffer_s": "match_buffer_s"},
                            {"max_streams": 64, "match_buffer_s": 120.0})
    name = args.model_name or _safe_name(args.model.resolve().name)
    model = ModelConfig.from_json({"name": name, "model_dir": str(args.model), "provider": args.provider,
                                   **_model_settings(profile)})
    try:
        limits = dataclasses.replace(ServiceLimits(), max_streams=args.max_streams, idle_timeout_s=args.idle_timeout_s,
                                     resume_grace_s=args.resume_grace_s)
        config = ServerConfig(
            host=args.host, port=args.port, token=token, library_path=args.library, limits=limits,
            allowed_origins=frozenset(args.allow_origin), cors_origins=frozenset(args.cors_origin),
            media_dir=args.media_dir, match_buffer_s=args.match_buffer_s, match_min_evidence=args.match_min_evidence,
            describe_model=args.describe_model, describe_prompt=args.describe_prompt, describe_ring_s=args.describe_ring_s,
        )
    except ValueError as e:
        raise ConfigError(str(e), hint="fix the option; `ostinato serve --help` lists the allowed values") from e

    def ready(url: str) -> None:
        auth = "bearer token required" if token else "no auth"
        print(f"ostinato serving {url} (model {name}, {auth}); dashboard: {url}/  stop: Ctrl-C / SIGTERM", flush=True)

    code = serve(config, [model], ready=ready)
    print("ostinato stopped (streams drained" + (", library flushed)" if args.library else ")"), flush=True)
    return code


def _model_settings(profile: Profile) -> dict[str, Any]:
    """Model config fields a profile sets (threads, window geometry, queue, batch, deadline)."""
    settings: dict[str, Any] = {}
    if profile.threads is not None:
        settings["intra_op_threads"] = profile.threads
    streaming: dict[str, Any] = {}
    if profile.hop_s is not None:
        streaming["chunk_samples"] = round(profile.hop_s * 16000 / 320) * 320
    if profile.left_context_s is not None:  # served windows have no right context (lowest latency)
        streaming["overlap_samples"] = 80 + round(profile.left_context_s * 16000 / 320) * 320
    for key, value in (("max_queue", profile.max_queue), ("batch_size", profile.batch_size),
                       ("max_lag_s", profile.max_lag_s)):
        if value is not None:
            streaming[key] = value
    if streaming:
        settings["streaming"] = streaming
    return settings


def _safe_name(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in text).strip("-._") or "model"
    return cleaned[:64]
