"""Qwen3 Playground: a Gradio playground for Qwen3 with pluggable backends.

    python app.py                     start the web UI
    python app.py chat --prompt TEXT  one reply on the command line (--json for a JSON object,
                                      --history FILE to continue an exported chat)
    python app.py compare --models A B --prompt TEXT   side by side (--json | --markdown;
                                      --score TEXT_OR_FILE: drift from the first model)
    python app.py models              list the model catalog
    python app.py build-tiny          build the tiny offline demo models
"""
from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    import cli
    from core.drift import CONTEXT, STRIDE

    parser = argparse.ArgumentParser(prog="app.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ui = sub.add_parser("ui", help="start the web UI (the default)")
    # Spaces sets GRADIO_SERVER_NAME=0.0.0.0 (and the port); elsewhere only this machine can connect
    ui.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                    help="address to listen on [default: $GRADIO_SERVER_NAME or 127.0.0.1]")
    ui.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                    help="port [default: $GRADIO_SERVER_PORT or 7860]")
    ui.add_argument("--share", action="store_true",
                    help="create a public gradio.live link; turns hosted mode on (anyone with the link is a stranger)")
    ui.add_argument("--share-with-local-access", action="store_true",
                    help="create a public gradio.live link WITHOUT hosted mode: anyone with the link can load this "
                         "machine's local paths and any model, and use its remote server and tools")
    ui.add_argument("--model", default=None,
                    help="model sessions start on, loaded in the background once the UI is up [default: "
                         "$QWEN3_PLAYGROUND_MODEL, else the first catalog model in the local cache, else tiny-bf16]")
    ui.add_argument("--max-models", type=int, default=None,
                    help="models kept loaded at once, shared by all sessions; past it the least recently "
                         "used idle model is unloaded [default: $QWEN3_PLAYGROUND_MAX_MODELS or 1]")
    ui.add_argument("--hosted", action="store_true",
                    help="hosted mode for serving strangers: catalog models only, the host's remote server "
                         "only, size limits [default: on when $SPACE_ID is set (Hugging Face Spaces)]")
    ui.add_argument("--concurrency", type=int, default=None,
                    help="requests served at once (local models still reply one at a time each) [default: 8]")

    chat = sub.add_parser("chat", help="chat once from the command line")
    cli.add_model_flags(chat)
    cli.add_chat_flags(chat)
    chat.add_argument("--history", metavar="FILE", default=None,
                      help="continue a chat exported from the UI (its JSON or Markdown export): --prompt is "
                           "the next message")
    cli.add_tool_flags(chat)
    cli.add_loop_retry_flag(chat)
    chat.add_argument("--json", action="store_true",
                      help="print one JSON object (as the /chat_json API endpoint returns it) instead of streaming text")

    compare = sub.add_parser("compare", help="run one prompt on 1-4 models side by side and export the results")
    compare.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                         help="catalog names, Hub repo ids or local paths; the first is the reference")
    cli.add_model_flags(compare, single_model=False)
    cli.add_chat_flags(compare, prompt_required=False)
    cli.add_tool_flags(compare)
    compare.add_argument("--concurrent", action="store_true",
                         help="run the models at the same time instead of one after another (fair timing)")
    compare.add_argument("--perplexity", metavar="TEXT", default=None,
                         help="also score this text (or a shipped one: tiny-script, encyclopedia, code, maths)")
    compare.add_argument("--score", metavar="TEXT_OR_FILE", default=None,
                         help="distribution drift of every model from the first on this text (a shipped one's "
                              "name, a file or the text): KL divergence (mean, 99th percentile, max), same top "
                              "token, perplexity on the same tokens")
    compare.add_argument("--score-context", type=int, default=CONTEXT, metavar="TOKENS",
                         help=f"--score's window length in tokens [default: {CONTEXT}]")
    compare.add_argument("--score-stride", type=int, default=STRIDE, metavar="TOKENS",
                         help=f"a new --score window every this many tokens [default: {STRIDE}]")
    out = compare.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the comparison as JSON")
    out.add_argument("--markdown", action="store_true", help="print the comparison as Markdown")

    models = sub.add_parser("models", help="list the model catalog and what is usable offline")
    models.add_argument("--json", action="store_true", help="print JSON")

    tiny = sub.add_parser("build-tiny", help="build (or find cached) the tiny demo/test models")
    tiny.add_argument("--formats", nargs="*", default=None, help="formats to build [default: every format except the on-request ones, e.g. random-0.6b-*]")
    tiny.add_argument("--force", action="store_true", help="rebuild even if cached")
    return parser


def main(argv: list[str] | None = None) -> int:
    import cli

    cli.quiet_libraries()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["ui", *argv]
    args = build_parser().parse_args(argv)
    if args.command == "ui":
        from ui.launch import launch

        return launch(args)
    return cli.run(args.command, args)


if __name__ == "__main__":
    sys.exit(main())
