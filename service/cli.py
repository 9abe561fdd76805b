"""`cvae-serve`: run the service with uvicorn on the settings' host and port."""

from __future__ import annotations

import argparse
import os
import sys

from service.failures import ModelLoadError


def main(argv: list[str] | None = None, prog: str = "cvae-serve") -> int:
    from service.settings import Settings, unknown_variables

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve the model over HTTP. Every option is also a CVAE_* environment variable.",
    )
    parser.add_argument("--host", help="bind address (default $CVAE_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default $CVAE_PORT or 8000)")
    parser.add_argument(
        "--model-repository",
        help="folder of <name>/<version>/ model directories (default $CVAE_MODEL_REPOSITORY or the shipped models/)",
    )
    parser.add_argument("--model-dir", help="serve this one model directory instead (default $CVAE_MODEL_DIR)")
    parser.add_argument("--providers", help="'auto' or a comma-separated provider list (default $CVAE_PROVIDERS)")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in vars(args).items() if value is not None}
    settings = Settings(**overrides)
    for name in unknown_variables(os.environ):
        print(
            f"warning: {name} is not a setting and is ignored; the settings are listed in the README", file=sys.stderr
        )

    import uvicorn

    from service import telemetry
    from service.app import create_app
    from service.engine.runtime import requested_providers, verify_files

    try:  # fail before uvicorn starts, with one line rather than a traceback
        if settings.model_dir is not None:
            verify_files(settings.model_dir, settings.max_model_file_bytes)
        elif not settings.model_repository.is_dir():
            raise ModelLoadError(f"The model repository {settings.model_repository} is not a folder.")
        requested_providers(settings.providers)
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    telemetry.configure_logs(settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        timeout_keep_alive=settings.keep_alive_s,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
