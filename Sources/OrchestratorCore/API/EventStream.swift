import Foundation
import NIOCore
import Synchronization

/// `GET /events`: what happens, pushed to HTTP clients as server-sent events (the console, or any
/// client that would rather follow than poll) — every alert event (raised, cleared; suppressed ones
/// too, marked), every lifecycle transition, every change of a tag's service state, and the status
/// every `statusInterval`.
///
/// An alert sink like the MQTT publisher, so nothing is added to the hot path but a check that
/// nobody listens. Each client has a bounded queue: one that falls `capacity` events behind is
/// disconnected (it reconnects and reads the state again) rather than buffered without bound or
/// silently thinned.
package final class EventStream: AlertSink, Sendable {
    private struct Client {
        let continuation: AsyncStream<ByteBuffer>.Continuation
    }

    private let clients = Mutex<[UInt64: Client]>([:])
    private let count = Atomic<Int>(0)
    private let nextID = Atomic<UInt64>(0)
    private let closed = Atomic<Bool>(false)
    let capacity: Int

    package init(capacity: Int = 1024) {
        self.capacity = capacity
    }

    /// Clients listening now.
    package var listeners: Int { self.count.load(ordering: .relaxed) }

    /// A new client's stream of SSE frames. The client is registered while the stream is being
    /// read — from ``Subscription/makeAsyncIterator()`` until the reader drops it (the response
    /// ended: the client went, or the server is stopping) — and its stream ends when it falls
    /// behind or at ``close()``.
    func subscribe() -> Subscription { Subscription(hub: self) }

    /// One client's frames, as an `AsyncSequence` for the response body.
    struct Subscription: AsyncSequence, Sendable {
        typealias Element = ByteBuffer
        let hub: EventStream

        func makeAsyncIterator() -> Iterator {
            let (stream, lease) = self.hub.register()
            return Iterator(base: stream.makeAsyncIterator(), lease: lease)
        }

        struct Iterator: AsyncIteratorProtocol {
            var base: AsyncStream<ByteBuffer>.Iterator
            /// Unregisters the client when the reader lets go of the iterator.
            let lease: Lease

            mutating func next() async -> ByteBuffer? { await self.base.next() }
        }
    }

    /// A client's registration, ended when the last reference goes.
    final class Lease: Sendable {
        let hub: EventStream
        let id: UInt64

        init(hub: EventStream, id: UInt64) {
            self.hub = hub
            self.id = id
        }

        deinit { self.hub.remove(self.id) }
    }

    private func register() -> (AsyncStream<ByteBuffer>, Lease) {
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .bufferingOldest(self.capacity))
        let id = self.nextID.add(1, ordering: .relaxed).newValue
        let lease = Lease(hub: self, id: id)
        guard !self.closed.load(ordering: .relaxed) else {
            continuation.finish()
            return (stream, lease)
        }
        self.clients.withLock { clients in
            clients[id] = Client(continuation: continuation)
            self.count.store(clients.count, ordering: .relaxed)
        }
        // The first frame says how long to wait before reconnecting.
        continuation.yield(ByteBuffer(string: "retry: 2000\n\n"))
        return (stream, lease)
    }

    private func remove(_ id: UInt64) {
        let client = self.clients.withLock { clients in
            defer { self.count.store(clients.count, ordering: .relaxed) }
            return clients.removeValue(forKey: id)
        }
        client?.continuation.finish()
    }

    /// Sends one event to every client (`event: name`, `data: json`).
    func send(_ name: String, _ json: [UInt8]) {
        guard self.count.load(ordering: .relaxed) > 0 else { return }
        var frame = ByteBuffer()
        frame.writeString("event: \(name)\ndata: ")
        frame.writeBytes(json)  // compact JSON: one line
        frame.writeString("\n\n")
        self.broadcast(frame)
    }

    /// A comment line: keeps idle connections (and the proxies between) from timing out.
    func keepAlive() {
        guard self.count.load(ordering: .relaxed) > 0 else { return }
        self.broadcast(ByteBuffer(string: ": keep-alive\n\n"))
    }

    private func broadcast(_ frame: ByteBuffer) {
        let clients = self.clients.withLock { $0 }
        for (id, client) in clients {
            if case .dropped = client.continuation.yield(frame) {
                // Too far behind: end its stream, so it reconnects and reloads the state.
                self.remove(id)
            }
        }
    }

    /// Ends every stream (graceful shutdown: an open response must not hold the server up).
    package func close() {
        self.closed.store(true, ordering: .relaxed)
        let clients = self.clients.withLock { clients in
            defer {
                clients.removeAll()
                self.count.store(0, ordering: .relaxed)
            }
            return clients
        }
        for client in clients.values { client.continuation.finish() }
    }

    // MARK: - What is sent

    package func deliver(_ event: AlertEvent) {
        guard self.count.load(ordering: .relaxed) > 0 else { return }
        self.send("alert", event.jsonPayload())
    }

    package func deliver(_ transition: AlertTransition) {
        guard self.count.load(ordering: .relaxed) > 0 else { return }
        self.send("transition", transition.jsonPayload())
    }

    package func deliver(service tag: String, _ outOfService: OutOfServiceTag?) {
        guard self.count.load(ordering: .relaxed) > 0 else { return }
        self.send("service", OutOfServiceTag.json(tag: tag, outOfService, at: .now()))
    }
}
