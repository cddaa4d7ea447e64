/// What the decision side reads of the plant's data, and nothing else: the detectors' view of some
/// tags, their recent good samples, and the tags under a unit. The ingest pipeline provides it;
/// the coordinator and the scenario tests only see this.
package protocol TagDataSource: Sendable {
    /// The selection criteria's view of some tags (unknown ones left out), over the newest
    /// `window` samples of each (the module's window).
    func views(of tags: [String], window: Int) -> [TagView]
    /// The newest `limit` good samples of each tag, oldest first.
    func windows(of tags: [String], limit: Int) -> [TagWindow]
    /// Tags seen so far under a prefix (a unit's path followed by `/`, or `market/`).
    func tags(withPrefix prefix: String) -> [String]
}

/// A tag's recent good samples, oldest first.
package struct TagWindow: Sendable, Equatable {
    package let tag: String
    /// Epoch ms of each sample.
    package let times: [Int64]
    package let values: [Double]

    package init(tag: String, times: [Int64], values: [Double]) {
        self.tag = tag
        self.times = times
        self.values = values
    }
}

/// The data a decision concerns: its key (for deduplication and cooldowns), its tags, and the tag
/// whose own data must be usable.
package struct DecisionScope: Sendable, Equatable {
    package let key: String
    package let tags: [String]
    /// The tag whose data must be usable (data scope `tag`, an alert on one tag).
    package let required: String?

    package init(key: String, tags: [String], required: String?) {
        self.key = key
        self.tags = tags
        self.required = required
    }

    /// The scope of a trigger for a module reading `data`:
    /// - `none`: the named scope (or `all`), no tags;
    /// - `market`: every `market/` tag;
    /// - `tag`: the alert's tag; for a unit alert, a schedule or a request, every tag of the unit;
    /// - `unit`: every tag of the alert's unit (or of the named unit).
    package static func of(_ trigger: TriggerEvent, data: ModuleSettings.DataScope, tags source: some TagDataSource) -> DecisionScope {
        let alertTag = trigger.alert?.tag
        let isUnitAlert = trigger.alert?.kind == .multivariate
        let named = trigger.scope
        switch data {
        case .none:
            return DecisionScope(key: named ?? "all", tags: [], required: nil)
        case .market:
            return DecisionScope(key: "market", tags: source.tags(withPrefix: "market/"), required: nil)
        case .tag:
            if let tag = alertTag, !isUnitAlert {
                return DecisionScope(key: tag, tags: [tag], required: tag)
            }
            let unit = named ?? "all"
            let tags = source.tags(withPrefix: unit + "/")
            return DecisionScope(key: unit, tags: tags.isEmpty ? [unit] : tags, required: nil)
        case .unit:
            let unit = isUnitAlert ? (alertTag ?? "all") : (alertTag.map(Self.unit(of:)) ?? named ?? "all")
            let tags = source.tags(withPrefix: unit + "/")
            return DecisionScope(key: unit, tags: tags.isEmpty ? [unit] : tags, required: nil)
        }
    }

    /// The path above a tag (`r1/cdu/cdu1/TI-101` → `r1/cdu/cdu1`).
    package static func unit(of tag: String) -> String {
        guard let slash = tag.lastIndex(of: "/") else { return tag }
        return String(tag[..<slash])
    }
}
