"""`taps serve` (the whole system on a local Ray, or its Ray Serve / KubeRay configs) and `taps client`.

Wired into the `taps` command by `register(app)`. Every failure a user can cause (a bad config, resources the
machine lacks, a server that refuses a request or cannot be reached) ends as one line on stderr, never a stack
trace.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Optional

import typer
import yaml
from google.protobuf.json_format import MessageToDict

from taps_engine.cli_common import console, err, fail
from taps_engine.fileio import atomic_write
from taps_engine.policies import POLICIES

from .config import ServeConfig, embedded_defaults, load_serve_config
from .logs import LogLevel, configure_logging

DEFAULT_SERVER = "127.0.0.1:9000"
DEFAULT_IMAGE = "taps:0.1.0"

client_app = typer.Typer(help="Call a running TAPS server over gRPC.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add `taps serve` and `taps client ...` to the `taps` command."""
    app.command("serve")(serve)
    app.add_typer(client_app, name="client")


def _serving_config(config: Optional[Path], port: Optional[int]) -> ServeConfig:
    loaded = load_serve_config(config) if config is not None else embedded_defaults()
    if port is not None:
        loaded.router.grpc_port = port
        loaded = ServeConfig.model_validate(loaded.model_dump())  # re-run the port's bounds check
    return loaded


def _write(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    err.print(f"wrote {path}")


def serve(
    config: Optional[Path] = typer.Option(None, "--config", help="Serving YAML (default: embedded defaults)."),
    port: Optional[int] = typer.Option(None, "--port", help="gRPC port (overrides the config's router.grpc_port)."),
    num_cpus: Optional[float] = typer.Option(None, "--num-cpus", help="CPUs the local Ray may use (default: all)."),
    serve_yaml: Optional[Path] = typer.Option(None, "--serve-yaml",
                                              help="Write the Ray Serve config (for `serve run` / `serve deploy`) "
                                                   "to this file and exit."),
    emit_rayservice: Optional[Path] = typer.Option(None, "--emit-rayservice",
                                                   help="Write the KubeRay RayService manifest to this file and "
                                                        "exit."),
    image: str = typer.Option(DEFAULT_IMAGE, "--image", help="Container image for --emit-rayservice."),
    log_level: Optional[LogLevel] = typer.Option(None, "--log-level", help="TAPS log level in every replica "
                                                                           "(overrides the config's log_level)."),
) -> None:
    """Serve TAPS over gRPC on a local Ray until Ctrl-C, or write its Ray Serve / KubeRay configs."""
    from .app import run_local, serve_config_dict, shutdown_local

    try:
        serving = _serving_config(config, port)
    except ValueError as e:
        fail(str(e))
    if serve_yaml is not None or emit_rayservice is not None:
        if serve_yaml is not None:
            _write(serve_yaml, yaml.safe_dump(serve_config_dict(serving), sort_keys=False))
        if emit_rayservice is not None:
            from .kuberay import rayservice_yaml

            source = f" --config {config}" if config is not None else ""
            command = f"taps serve{source} --emit-rayservice {emit_rayservice} --image {image}"
            _write(emit_rayservice, rayservice_yaml(serving, image, command))
        return
    if log_level is not None:
        serving.log_level = log_level
    configure_logging(serving.log_level)
    # a server started in the background inherits an ignored SIGINT, and SIGTERM would end it without cleanup:
    # both stop it through the same path, which shuts the local Ray down with every process it started
    _stop_on_signals()
    try:
        with console.status("starting Ray Serve (drafters, verifier, router)"):
            address = run_local(serving, num_cpus=num_cpus, log_to_driver=True)
        _stop_on_signals()  # again: ray.init replaces the SIGTERM handler with one that aborts the process
        console.print(f"TAPS serving on {address} (gRPC); Ctrl-C or SIGTERM stops it")
        console.print(f"  try: taps client generate --server {address} \"What is 17 + 5?\"")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        err.print("stopping")
    except (ValueError, RuntimeError, OSError) as e:  # bad config, resources, a replica that cannot start
        shutdown_local()
        fail(str(e))
    finally:
        shutdown_local()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, _interrupt)


ServerOpt = typer.Option(os.environ.get("TAPS_SERVER", DEFAULT_SERVER), "--server",
                         help="HOST:PORT of the TAPS gRPC server (env TAPS_SERVER).")
TimeoutOpt = typer.Option(None, "--timeout", help="Deadline in seconds.")
KeyOpt = typer.Option(os.environ.get("TAPS_API_KEY"), "--api-key", show_default=False,
                      help="API key for servers that ask for one (env TAPS_API_KEY).")


@client_app.command("generate")
def client_generate(
    prompt: str = typer.Argument(..., help="User prompt (rendered with the chat template unless --raw)."),
    server: str = ServerOpt,
    system: str = typer.Option("", help="System prompt."),
    raw: bool = typer.Option(False, help="Send the prompt as raw text, without the chat template."),
    policy: str = typer.Option("", help=f"{', '.join(POLICIES)}; default: the server's."),
    drafter: str = typer.Option("", help="Drafter for `single`, or the forced assignment for `sticky` and `probe`."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
    temperature: Optional[float] = typer.Option(None), top_p: Optional[float] = typer.Option(None),
    top_k: int = typer.Option(0), seed: int = typer.Option(0),
    conversation_id: str = typer.Option("", "--conversation-id", help="Keys the drafter assignment cache."),
    stream: bool = typer.Option(False, help="Print text as it is generated."),
    json_out: bool = typer.Option(False, "--json", help="Print the whole response as JSON."),
    timeout: Optional[float] = TimeoutOpt, api_key: Optional[str] = KeyOpt,
) -> None:
    """Generate an answer on a running server."""
    from .client import TapsClient, TapsError

    fields = dict(system=system, raw=raw, policy=policy, drafter=drafter, max_new_tokens=max_new_tokens,
                  temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, conversation_id=conversation_id)
    with TapsClient(server, timeout_s=timeout, api_key=api_key) as client:
        try:
            if stream and not json_out:
                for chunk in client.stream(prompt, **fields):
                    console.print(chunk.text, end="", markup=False, highlight=False, soft_wrap=True)
                    final = chunk
                console.print()
                stats, policy_ran, decision = final.stats, final.policy, final.decision
            else:
                response = client.generate(prompt, **fields)
                if json_out:
                    console.print_json(json.dumps(MessageToDict(response)))
                    return
                console.print(response.text, markup=False, highlight=False)
                stats, policy_ran, decision = response.stats, response.policy, response.decision
        except TapsError as e:
            fail(f"{server}: {e}")
    used = decision.drafter or ", ".join(sorted(stats.drafter_selections)) or "none"
    err.print(f"[dim]{stats.new_tokens} tokens, {stats.n_steps} steps, tau {stats.mean_acceptance_length:.2f}, "
              f"{stats.tokens_per_s:.1f} tok/s, policy {policy_ran}, drafter {used}"
              f"{' (assignment cache)' if decision.from_assignment_cache else ''}[/dim]")


@client_app.command("drafters")
def client_drafters(server: str = ServerOpt, timeout: Optional[float] = TimeoutOpt,
                    api_key: Optional[str] = KeyOpt) -> None:
    """List the server's drafters, policies and limits (JSON)."""
    from .client import TapsClient, TapsError

    with TapsClient(server, timeout_s=timeout, api_key=api_key) as client:
        try:
            console.print_json(json.dumps(MessageToDict(client.list_drafters())))
        except TapsError as e:
            fail(f"{server}: {e}")


@client_app.command("health")
def client_health(server: str = ServerOpt, timeout: Optional[float] = typer.Option(10.0, "--timeout")) -> None:
    """grpc.health.v1 check: prints SERVING (exit 0) or the status (exit 1)."""
    from .client import TapsClient, TapsError

    with TapsClient(server, timeout_s=timeout) as client:
        try:
            status = client.health()
        except TapsError as e:
            fail(f"{server}: {e}")
    console.print(status)
    if status != "SERVING":
        raise typer.Exit(1)
