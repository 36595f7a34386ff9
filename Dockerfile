# podscribe: serves the transcribe-episode, rerun-chunks and poll-feeds deployments.
# Build: docker build -t podscribe .   (docker-compose.yml builds and wires it up)
FROM python:3.11-slim

RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch first and pinned: any other spec pulls a multi-GB CUDA build (see scripts/setup.sh).
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY flows ./flows
RUN pip install --no-cache-dir ".[postgres]"

# Data lives on volumes (docker-compose.yml): decoded audio and chunks, transcripts and the
# catalog, persisted chunk results (a Retry reads finished chunks from there), model cache.
ENV PODSCRIBE_AUDIO_ROOT=/data/audio \
    PODSCRIBE_TRANSCRIPTS_ROOT=/data/transcripts \
    PODSCRIBE_DB=/data/transcripts/podscribe.db \
    PODSCRIBE_RESULTS_DIR=/data/results \
    PODSCRIBE_CACHE_DIR=/data/cache \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1
VOLUME ["/data/audio", "/data/transcripts", "/data/results", "/data/cache"]

CMD ["podscribe", "serve"]
