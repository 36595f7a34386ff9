# Every target creates .venv/ first (scripts/setup.sh), so a fresh clone needs nothing else.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.podscribe-installed

.PHONY: setup demo test test-quick check bench bench-long clean-data

$(STAMP): pyproject.toml constraints.txt scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

## demo: transcribe and score the bundled demo episode, then say where the outputs are
demo: $(STAMP)
	$(BIN)/podscribe demo

## test: the whole suite (slow model tests and browser tests included). The e2e, stack and
## multimachine tests start their own Prefect servers (and browsers, PostgreSQL clusters,
## workers); each group runs in a process of its own, because Prefect's process-wide client
## state left behind by one server stalled later flow tests on another. Each of the last three
## must run at least one test (pytest exits 5 when a marker selects none).
test: $(STAMP)
	$(BIN)/pytest -m "not e2e and not stack and not multimachine"
	$(BIN)/pytest -m stack
	$(BIN)/pytest -m multimachine
	$(BIN)/pytest -m e2e

## test-quick: everything but model inference and browser tests
test-quick: $(STAMP)
	$(BIN)/pytest -m "not slow and not e2e"

## check: lint, format check, types and the import contracts (CI runs it before the tests)
check: $(STAMP)
	$(BIN)/ruff check pipeline flows tests scripts
	$(BIN)/ruff format --check pipeline flows tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

## bench: podscribe vs openai-whisper transcribe() on the shared dev episode
bench: $(STAMP)
	$(BIN)/podscribe bench ../shared/eval/dev-episode/episode.mp3 \
		--reference ../shared/eval/dev-episode/reference.txt

## bench-long: the same on the 17.7-minute longform-dev call, with near-cut error rates of
## podscribe and of transcribe() at podscribe's cut positions (minutes on a 2-core CPU)
bench-long: $(STAMP)
	$(BIN)/podscribe bench ../shared/eval/longform-dev/episode.mp3 \
		--reference ../shared/eval/longform-dev/reference.txt

clean-data:
	rm -rf audio/*/ transcripts/*/
