import Foundation
import NIOCore
import Testing

@testable import OrchestratorCore

/// `GET /events`' fan-out (`EventStream`): frames, registration for as long as a reader holds the
/// stream, a bounded queue per client, and the end at shutdown.
@Suite struct EventStreamTests {
    func text(_ buffer: ByteBuffer?) -> String? { buffer.map { String(buffer: $0) } }

    @Test func `a reader gets retry first, then each event as one frame; nobody listening costs a check`() async {
        let hub = EventStream()
        hub.send("alert", Array(#"{"a":1}"#.utf8))  // nobody listens: dropped at once
        var iterator = hub.subscribe().makeAsyncIterator()
        #expect(hub.listeners == 1)
        hub.send("alert", Array(#"{"alert_id":"x","state":"raised"}"#.utf8))
        hub.keepAlive()
        #expect(self.text(await iterator.next()) == "retry: 2000\n\n")
        #expect(self.text(await iterator.next()) == "event: alert\ndata: {\"alert_id\":\"x\",\"state\":\"raised\"}\n\n")
        #expect(self.text(await iterator.next()) == ": keep-alive\n\n")
    }

    @Test func `a reader that lets go is unregistered; close ends every stream and refuses new ones`() async {
        let hub = EventStream()
        do {
            var dropped = hub.subscribe().makeAsyncIterator()
            _ = await dropped.next()
            #expect(hub.listeners == 1)
        }
        #expect(hub.listeners == 0)
        var open = hub.subscribe().makeAsyncIterator()
        _ = await open.next()
        hub.close()
        #expect(await open.next() == nil && hub.listeners == 0)
        var late = hub.subscribe().makeAsyncIterator()
        #expect(await late.next() == nil && hub.listeners == 0)
    }

    @Test func `a client that falls behind its queue is disconnected, not buffered without bound`() async {
        let hub = EventStream(capacity: 4)
        var slow = hub.subscribe().makeAsyncIterator()
        for n in 0..<10 { hub.send("alert", Array("{\"n\":\(n)}".utf8)) }
        #expect(hub.listeners == 0)
        // What was queued is still read, then the stream ends.
        var frames = 0
        while await slow.next() != nil { frames += 1 }
        #expect(frames == 4)
    }
}
