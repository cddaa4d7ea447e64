// swift-tools-version:6.2
import PackageDescription

/// One set of settings for every Swift target (STYLE §3).
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "dang",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "dang", targets: ["dang"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        // C libraries (SPEC §1), reached only through their Swift owners below.
        .systemLibrary(
            name: "CMosquitto",
            pkgConfig: "libmosquitto",
            providers: [.apt(["libmosquitto-dev"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        // glibc's malloc.h (mallopt): part of libc, nothing to link.
        .systemLibrary(name: "CMalloc"),

        // Swift owners of the C handles, nothing else.
        .target(
            name: "Mosquitto",
            dependencies: ["CMosquitto"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "LibPQ",
            dependencies: ["CLibPQ"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Curl",
            dependencies: ["CCurl"],
            swiftSettings: swiftSettings
        ),

        // The daemon's library, one folder per stage, arrows one way (docs/architecture.md):
        //   Ingest/ → Detection/ (condition events) → Alerting/ (episodes) → Decide/ → Act/ → Record/
        //   Advise/ (the LLM), API/ (a StatusSnapshot and OperatorActions), Replay/, Configuration/,
        //   Runtime/ (wiring and the services), Support/.
        .target(
            name: "OrchestratorCore",
            dependencies: [
                "Mosquitto",
                "LibPQ",
                "Curl",
                "CMalloc",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            // The console's page (docs/console.md): plain files, compiled into the binary.
            resources: [
                .embedInCode("API/Console/console.html"),
                .embedInCode("API/Console/console.css"),
                .embedInCode("API/Console/console.js"),
            ],
            swiftSettings: swiftSettings
        ),

        // Tools around the daemon, not in it: benchmarks, the plant simulator, the reference
        // workers and the fuzz entry points. `dang` links them for its subcommands; the daemon's
        // library does not.
        .target(
            name: "DangTools",
            dependencies: [
                "OrchestratorCore",
                "Mosquitto",
                "LibPQ",
                "Curl",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "dang",
            dependencies: [
                "OrchestratorCore",
                "DangTools",
                "LibPQ",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        // Fuzz targets (scripts/fuzz.sh builds them with libFuzzer); a plain build replays inputs.
        .executableTarget(
            name: "dang-fuzz",
            dependencies: ["DangTools"],
            swiftSettings: swiftSettings
        ),

        .testTarget(
            name: "OrchestratorCoreTests",
            dependencies: [
                "OrchestratorCore",
                "DangTools",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            exclude: ["Fixtures"],  // read from the source tree by path (oracle fixtures)
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "OrchestratorCore",
                "DangTools",
                "Mosquitto",
                "LibPQ",
                "Curl",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
