"""podscribe's settings: one object for the CLI and the Prefect flows.

Values come from ``PODSCRIBE_*`` environment variables (``PODSCRIBE_AUDIO_ROOT=/data/audio``),
then from the command line's flags, which override them. They are read when a run starts
(``load_settings()`` in a command or at the top of a flow run), never at import, and passed
down as plain arguments: the stage functions never read the environment.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.audio.diarize import DiarizeOptions, parse_speakers
from pipeline.core.errors import OptionsError
from pipeline.sources.catalog import RetryPolicy
from pipeline.sources.net import FetchLimits

if TYPE_CHECKING:
    from pipeline.asr.weights import WeightsSource

ENV_PREFIX = "PODSCRIBE_"


class Settings(BaseSettings):
    """Where podscribe keeps things, what it runs with by default, and how flows run chunks."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # --- where things live ---------------------------------------------------------------
    audio_root: Path = Field(Path("audio"), description="Decoded episode audio and chunks.")
    transcripts_root: Path = Field(
        Path("transcripts"), description="Per-episode outputs, reports and history.jsonl."
    )
    # A path is a SQLite file (one machine); a postgresql:// URL is one catalog for several.
    db: Path | str = Field(
        Path("transcripts/podscribe.db"),
        description="The feed and episode catalog: a SQLite file path or a postgresql:// URL.",
    )
    # Persisted chunk results of the flows: a Retry reads finished chunks from here. In
    # docker-compose this must be a volume shared by everything that runs flows.
    results_dir: Path = Field(Path("results"), description="Persisted Prefect task results.")
    # Unset: everything stays under the local roots above (one machine). Set to a folder or
    # an fsspec URL (s3://bucket/podscribe, gs://..., file:///mnt/shared), the flows put
    # chunks, chunk results, Prefect results, outputs and history there too, and chunk tasks
    # read and write only there: Dask workers on other machines need nothing else. The local
    # roots stay each machine's working copy. Credentials: fsspec's usual environment.
    storage_url: str | None = Field(
        None,
        description="Shared storage root for several machines: a folder or an fsspec URL.",
    )

    # --- how episodes are transcribed by default -----------------------------------------
    model: str = Field("tiny.en", description="Whisper model name or .pt path.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where Whisper runs.")
    speakers: str = Field(
        "off", description="Speaker diarization: off, auto (count them) or a number of speakers."
    )

    # --- how the flows run chunk tasks ---------------------------------------------------
    # "threads": chunk tasks share one process (and its model); "dask": a Dask cluster.
    task_runner: Literal["threads", "dask"] = "threads"
    # An existing Dask scheduler ("tcp://host:8786"); none starts a LocalCluster per flow run.
    dask_address: str | None = None
    # Slots of the global "whisper-device" limit, created when missing: how many chunk
    # transcriptions may hold the device at once across all flow runs. A slot is held while
    # the chunk waits in the micro-batcher's queue as well as while it is decoded, so the
    # default is twice TranscribeOptions.batch_size (8): the next batch's chunks queue while
    # one runs.
    device_slots: int = Field(default=16, ge=1)
    # Slots of the global "podscribe-diarize" limit, created when missing: how many diarize
    # tasks may run at once across all flow runs and workers. Each holds a whole episode's
    # samples and speaker embeddings in memory (a 3-hour episode: ~0.7 GB of float32 samples
    # alone), unlike a chunk task; a back catalogue's runs queue for a slot instead.
    diarize_slots: int = Field(default=2, ge=1)
    # Chunk tasks at once per flow run (threads feeding the micro-batcher); like the slots,
    # twice the batch size, so that the batcher never idles waiting for a thread to free.
    workers: int = Field(default=16, ge=1)
    # Worker processes of the LocalCluster a "dask" flow run starts (each loads the model).
    dask_workers: int = Field(default=2, ge=1)

    # --- how many episodes run at once --------------------------------------------------
    # The concurrency limit of the served transcribe-episode and rerun-chunks deployments:
    # the first poll of a back catalogue creates a run per episode at once; beyond this many
    # they wait (AwaitingConcurrencySlot) instead of each loading a model and cutting audio.
    episode_runs: int = Field(
        default=2, ge=1, description="Most episode flow runs at once (per deployment)."
    )

    # --- limits on what comes from the network (feeds, downloads, references) ------------
    # Each is a field of pipeline.sources.net.FetchLimits of the same name (fetch_limits()).
    connect_timeout_s: float = Field(10.0, gt=0, description="Seconds to open a connection.")
    read_timeout_s: float = Field(
        30.0, gt=0, description="Seconds of silence from a server before an attempt fails."
    )
    download_timeout_s: float = Field(
        3600.0, gt=0, description="Total seconds for one audio or weights download, retries too."
    )
    request_timeout_s: float = Field(
        120.0, gt=0, description="Total seconds for one feed or reference fetch, retries too."
    )
    max_download_bytes: int = Field(2_000_000_000, gt=0, description="Largest episode download.")
    max_feed_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest feed document.")
    max_feed_items: int = Field(5000, gt=0, description="Items read from one feed; rest ignored.")
    max_reference_bytes: int = Field(
        20 * 1024 * 1024, gt=0, description="Largest reference transcript."
    )
    max_redirects: int = Field(5, ge=0, description="Redirects followed per request.")
    # Off: loopback, private and link-local addresses are refused (a feed must not reach the
    # machine's own network). On for local feeds; the demo sets it.
    allow_private_networks: bool = Field(
        False, description="Fetch from loopback/private/link-local addresses too."
    )
    # Comma-separated networks allowed even when private networks are not, e.g.
    # "192.168.1.20/32" for one NAS serving a feed.
    allowed_networks: str = Field("", description="Networks to fetch from even if private.")
    # Where `podscribe models pull` and --model NAME download standard Whisper weights from:
    # openai-whisper's own URLs, <base>/<sha256>/<file>.pt (a mirror or a test server may stand in).
    weights_base_url: str = Field(
        "https://openaipublic.azureedge.net/main/whisper/models",
        description="Base URL of openai-whisper's weights.",
    )

    # --- limits on audio and on retries of failed episodes --------------------------------
    # Longest episode transcribed, in seconds of audio; a longer one fails once this much is
    # decoded (its header is not trusted), before any chunk is cut. Ten hours: above the
    # longest shows, below what would fill a small disk with decoded audio (~1.15 GB/10 h).
    max_episode_s: float = Field(
        default=36_000.0, gt=0, description="Maximum episode duration (seconds of audio)."
    )
    # A failed episode is claimed again by polls, after retry_backoff_s, then twice that, ...
    # (at most retry_backoff_max_s apart) until it has run retry_max_attempts times in all.
    retry_max_attempts: int = Field(
        default=5, ge=1, description="Runs of a failing episode, the first included."
    )
    retry_backoff_s: float = Field(
        default=600.0, ge=0, description="Wait before the first retry, doubled after each."
    )
    retry_backoff_max_s: float = Field(
        default=86400.0, ge=0, description="The longest wait between two attempts."
    )
    # An episode "running" this long whose flow run is gone (or was never recorded) is taken
    # to be stuck (its poll or worker died) and is failed, to be retried. Longer than the
    # longest transcription you expect.
    running_timeout_s: float = Field(
        default=6 * 3600.0, gt=0, description="When a running episode counts as stuck."
    )

    @field_validator("speakers")
    @classmethod
    def _speakers(cls, value: str) -> str:
        parse_speakers(value)  # off | auto | 1-50, or a clear error
        return value.strip().lower()

    @field_validator("db", mode="before")
    @classmethod
    def _path_or_url(cls, value: object) -> object:
        # A URL must stay text: Path("postgresql://u@h/db") would fold its "//" into "/".
        if isinstance(value, str) and "://" not in value:
            return Path(value)
        return value


def fetch_limits(settings: Settings) -> FetchLimits:
    """The network limits of ``settings`` as the frozen value the stage functions take."""
    values = {f.name: getattr(settings, f.name) for f in fields(FetchLimits)}
    values["allowed_networks"] = tuple(n for n in settings.allowed_networks.split(",") if n.strip())
    return FetchLimits(**values)


def retry_policy(settings: Settings) -> RetryPolicy:
    """How polls retry failed episodes under ``settings`` (the catalog's RetryPolicy)."""
    return RetryPolicy(
        max_attempts=settings.retry_max_attempts,
        backoff_s=settings.retry_backoff_s,
        backoff_max_s=max(settings.retry_backoff_max_s, settings.retry_backoff_s),
    )


def diarize_options(settings: Settings) -> DiarizeOptions | None:
    """How to diarize under ``settings``; None when ``speakers`` is off."""
    speakers = parse_speakers(settings.speakers)
    if speakers is False:
        return None
    return DiarizeOptions(speakers=speakers or None, device=settings.device)


def weights_source(settings: Settings) -> WeightsSource:
    """Where standard Whisper weights are downloaded from, within the network limits."""
    from pipeline.asr.weights import WeightsSource  # numpy: only when weights are wanted

    return WeightsSource(base_url=settings.weights_base_url, limits=fetch_limits(settings))


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment now, with ``overrides`` (CLI flags) on top; a flag
    left at None keeps the environment's value. A bad value is one clear error."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise OptionsError(f"bad podscribe setting: {problems}") from None
