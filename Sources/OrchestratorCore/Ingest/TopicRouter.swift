/// Where a topic's samples go, decided once per distinct topic and then cached.
package enum Route: Sendable, Equatable {
    /// One tag per message (sensor or market topic).
    case tag(String)
    /// A unit's batch topic: each `values` entry is the tag `"\(base)/\(name)"`.
    case batch(base: String)
    /// No pattern of the topic map matches.
    case unknown
}

/// Classifies input topics with the topic map's patterns (docs/mqtt-contract.md, "Inputs";
/// docs/configuration.md, "Topic maps").
package struct TopicRouter: Sendable {
    private let map: TopicMap
    private let batchPattern: TopicPattern?

    package init(map: TopicMap) {
        self.map = map
        self.batchPattern = map.sensorPattern.parent
    }

    /// The MQTT subscription filters that cover every routable topic.
    package var subscriptions: [String] {
        var filters = [self.map.sensorPattern.filter, self.map.marketPattern.filter]
        if let batchPattern { filters.append(batchPattern.filter) }
        // A named topic that a pattern already covers must not be subscribed again: the broker
        // would deliver each message once per matching subscription.
        let patterns = [self.map.sensorPattern, self.map.marketPattern] + (self.batchPattern.map { [$0] } ?? [])
        for topic in self.map.namedTopics.keys.sorted() {
            let levels = topic.split(separator: "/", omittingEmptySubsequences: false)
            if !patterns.contains(where: { $0.match(levels) != nil }) { filters.append(topic) }
        }
        var seen = Set<String>()
        return filters.filter { seen.insert($0).inserted }
    }

    package func route(_ topic: String) -> Route {
        if let named = self.map.namedTopics[topic] { return .tag(named) }
        let levels = topic.split(separator: "/", omittingEmptySubsequences: false)
        if let captured = self.map.sensorPattern.match(levels) {
            return .tag(captured.joined(separator: "/"))
        }
        if let captured = self.map.marketPattern.match(levels) {
            return .tag((["market"] + captured).joined(separator: "/"))
        }
        if let batchPattern, let captured = batchPattern.match(levels) {
            return .batch(base: captured.joined(separator: "/"))
        }
        return .unknown
    }
}
