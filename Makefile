# DAN_G Orchestrator — the two quick-start commands are `make demo` and `make test`.
SWIFT ?= swift
export PATH := /opt/swift/usr/bin:$(PATH)

.PHONY: all deps build release test unit-test demo demo-ha services-start services-stop clean package image

all: build

## Install the Debian packages that are missing (libmosquitto-dev, libpq-dev, libcurl4-openssl-dev, mosquitto, postgresql).
deps:
	@scripts/install-deps.sh

## Debug build of `dang` (.build/debug/dang).
build: deps
	$(SWIFT) build

## Optimised build, as shipped and measured: .build/release/dang (scripts/build-release.sh).
release: deps
	@scripts/build-release.sh

## The Debian package from a release build: .build/package/dang_<version>_<arch>.deb (docs/deployment.md).
package: deps
	@scripts/package.sh

## The container image (Containerfile) with podman or buildah, where either is installed.
image: deps
	@scripts/image.sh

## Private broker + database, then the whole suite: unit, integration, and the `dang` binary end to end.
test: deps
	@scripts/test.sh

## Only the fast unit tests (no servers).
unit-test:
	$(SWIFT) test --filter OrchestratorCoreTests

## Build, start a private broker and database, run the orchestrator against the simulator; Ctrl-C stops all.
demo: deps
	@scripts/demo.sh

## The demo with two instances, active and standby; the active is killed after 45 s and the standby takes over.
demo-ha: deps
	@scripts/demo.sh --ha

## Start / stop the private broker and database used by `make demo` (env in .run/dev/env).
services-start:
	@scripts/services.sh start .run/dev
services-stop:
	@scripts/services.sh stop .run/dev

clean:
	-@scripts/services.sh stop .run/test --purge >/dev/null 2>&1
	-@scripts/services.sh stop .run/demo --purge >/dev/null 2>&1
	-@scripts/services.sh stop .run/dev --purge >/dev/null 2>&1
	rm -rf .build .run
