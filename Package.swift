// swift-tools-version:6.1
import PackageDescription

let strictSwift: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "Tranche",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tranche", targets: ["tranche"]),
        .library(name: "TrancheCore", targets: ["TrancheCore"]),
        .library(name: "TrancheStore", targets: ["TrancheStore"]),
        .library(name: "TrancheSQLite", targets: ["TrancheSQLite"]),
        .library(name: "TranchePostgres", targets: ["TranchePostgres"]),
        .library(name: "TrancheEngine", targets: ["TrancheEngine"]),
        .library(name: "TrancheStrategies", targets: ["TrancheStrategies"]),
        .library(name: "TrancheHTTP", targets: ["TrancheHTTP"]),
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    ],
    targets: [
        .target(name: "TrancheCore", swiftSettings: strictSwift),
        .target(name: "TrancheStore", dependencies: ["TrancheCore"], swiftSettings: strictSwift),
        .target(
            name: "TrancheSQLite",
            dependencies: [
                "TrancheStore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "TranchePostgres",
            dependencies: [
                "TrancheStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "TrancheEngine",
            dependencies: [
                "TrancheStore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "TrancheStrategies",
            dependencies: [
                "TrancheEngine",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "TrancheHTTP",
            dependencies: [
                "TrancheEngine",
                "TrancheStrategies",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.embedInCode("Dashboard/dashboard.html"), .embedInCode("openapi.yaml")],
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "tranche",
            dependencies: [
                "TrancheHTTP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                "TrancheSQLite",
                "TranchePostgres",
                "TrancheEngine",
                "TrancheStrategies",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "tranche-library-example",
            dependencies: ["TrancheSQLite", "TrancheEngine"],
            path: "Examples/LibraryExample",
            swiftSettings: strictSwift
        ),
        .testTarget(name: "TrancheCoreTests", dependencies: ["TrancheCore"], swiftSettings: strictSwift),
        .testTarget(
            name: "TrancheStoreTests",
            dependencies: [
                "TrancheSQLite", "TranchePostgres", "TrancheStore", "TrancheTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "TrancheEngineTests",
            dependencies: [
                "TrancheEngine", "TrancheSQLite", "TranchePostgres", "TrancheStrategies", "TrancheTestSupport",
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "TrancheTestSupport",
            dependencies: [
                "TrancheEngine",
                "TranchePostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Tests/TrancheTestSupport",
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "TrancheStrategiesTests",
            dependencies: [
                "TrancheStrategies", "TrancheSQLite", "TrancheTestSupport",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "TrancheHTTPTests",
            dependencies: [
                "TrancheHTTP", "TrancheSQLite", "TrancheStrategies", "TrancheTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        .testTarget(
            name: "TrancheCLITests",
            dependencies: [
                "tranche", "TrancheSQLite", "TranchePostgres", "TrancheTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictSwift
        ),
    ]
)
