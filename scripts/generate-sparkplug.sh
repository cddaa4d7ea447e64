#!/usr/bin/env bash
# Regenerates the committed Swift code of the Sparkplug B schema (proto/sparkplug_b.proto).
# Needs protoc (apt-get install protobuf-compiler) and protoc-gen-swift built from the same
# swift-protobuf version as Package.swift names (swift build -c release --product protoc-gen-swift
# in a checkout of it); CI never runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
plugin=${PROTOC_GEN_SWIFT:-$(command -v protoc-gen-swift || true)}
[ -x "$plugin" ] || { echo "set PROTOC_GEN_SWIFT to a protoc-gen-swift binary" >&2; exit 1; }
out=Sources/OrchestratorCore/Ingest/Sparkplug
mkdir -p "$out"
protoc --plugin=protoc-gen-swift="$plugin" --swift_opt=Visibility=Package --swift_opt=UseAccessLevelOnImports=true --swift_out="$out" --proto_path=proto proto/sparkplug_b.proto
echo "generated $out/sparkplug_b.pb.swift"
