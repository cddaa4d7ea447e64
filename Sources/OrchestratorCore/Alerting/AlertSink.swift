/// Where alert events go: the record writer, the MQTT publisher, the decision side.
package protocol AlertSink: Sendable {
    /// Called on the ingest thread, in order, for every alert transition. Must not block.
    func deliver(_ event: AlertEvent)
}
