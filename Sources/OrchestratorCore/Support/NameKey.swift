/// A coding key made at run time: a JSON object whose member names are data (tag names, module
/// names), written in the order the encoder is given them.
struct NameKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }

    init(_ name: String) { self.stringValue = name }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
