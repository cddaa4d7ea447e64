import Foundation
import Mosquitto
import Synchronization
#if canImport(Glibc)
import Glibc
package import OrchestratorCore
#endif

/// `dang bench-subscriber`: the baseline of `dang bench` — a libmosquitto subscriber that does
/// nothing with a message but count it, in a process of its own, with the same client code
/// (``MosquittoClient``: its network thread, TCP_NODELAY) as `dang run`. Writes its counts to a
/// file ten times a second until it is stopped.
package enum BareSubscriber {
    package struct Counts: Sendable {
        package var received: Int
        /// Monotonic ns of the first and the last message.
        package var first: UInt64
        package var last: UInt64

        package init(received: Int, first: UInt64, last: UInt64) {
            self.received = received
            self.first = first
            self.last = last
        }

        /// Reads what ``BareSubscriber/run(port:report:)`` wrote (`nil` before it connected).
        package init?(file: String) {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
            let fields = text.split(separator: " ").compactMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            guard fields.count == 3 else { return nil }
            self.init(received: Int(fields[0]), first: fields[1], last: fields[2])
        }
    }

    /// Subscribes to `plant/#` at QoS 0 and reports until the process is stopped.
    package static func run(port: Int, report: String) throws -> Never {
        let received = Atomic<Int>(0)
        let first = Atomic<UInt64>(0)
        let last = Atomic<UInt64>(0)
        let connected = Atomic<Bool>(false)
        var options = MQTTConnectionOptions(host: "127.0.0.1", port: port, clientID: "dang-bench-bare-\(getpid())")
        options.subscriptions = [("plant/#", 0)]
        let client = try MosquittoClient(
            options: options,
            onMessage: { _ in
                let now = monotonicNanoseconds()
                if received.add(1, ordering: .relaxed).newValue == 1 { first.store(now, ordering: .relaxed) }
                last.store(now, ordering: .relaxed)
            },
            onEvent: { event in if case .connected = event { connected.store(true, ordering: .relaxed) } })
        try client.start()
        while true {
            usleep(100_000)
            guard connected.load(ordering: .relaxed) else { continue }
            let line = "\(received.load(ordering: .relaxed)) \(first.load(ordering: .relaxed)) \(last.load(ordering: .relaxed))\n"
            try? line.write(toFile: report, atomically: true, encoding: .utf8)
        }
    }
}
