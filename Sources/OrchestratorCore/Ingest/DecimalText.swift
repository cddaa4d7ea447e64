/// Decimal numbers of the common sensor shape read without `strtod`.
enum DecimalText {
    private static let powersOfTen: [Double] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
        1e21, 1e22,
    ]

    /// Clinger's fast path: a decimal whose digits, read as an integer, fit in 53 bits, with a power
    /// of ten within ±22, is that integer times or divided by an exactly representable power of ten:
    /// one correctly rounded IEEE operation on exact operands, so the same double `strtod` gives.
    /// `nil` for anything else (more digits, larger exponents): the caller falls back to `strtod`.
    /// The text must already be a valid JSON number.
    static func fastPath(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Double? {
        var i = start
        let negative = bytes[i] == UInt8(ascii: "-")
        if negative { i += 1 }
        var mantissa: UInt64 = 0
        var exponent = 0
        while i < end, bytes[i] &- UInt8(ascii: "0") < 10 {
            mantissa = mantissa * 10 + UInt64(bytes[i] &- UInt8(ascii: "0"))
            guard mantissa <= 1 << 53 else { return nil }
            i += 1
        }
        if i < end, bytes[i] == UInt8(ascii: ".") {
            i += 1
            while i < end, bytes[i] &- UInt8(ascii: "0") < 10 {
                mantissa = mantissa * 10 + UInt64(bytes[i] &- UInt8(ascii: "0"))
                guard mantissa <= 1 << 53 else { return nil }
                exponent -= 1
                i += 1
            }
        }
        if i < end {  // `e` or `E`
            i += 1
            var negativeExponent = false
            if i < end, bytes[i] == UInt8(ascii: "-") || bytes[i] == UInt8(ascii: "+") {
                negativeExponent = bytes[i] == UInt8(ascii: "-")
                i += 1
            }
            var written = 0
            while i < end, bytes[i] &- UInt8(ascii: "0") < 10 {
                written = written * 10 + Int(bytes[i] &- UInt8(ascii: "0"))
                guard written < 1000 else { return nil }
                i += 1
            }
            exponent += negativeExponent ? -written : written
        }
        guard i == end, exponent >= -22, exponent <= 22 else { return nil }
        let magnitude = exponent < 0 ? Double(mantissa) / Self.powersOfTen[-exponent] : Double(mantissa) * Self.powersOfTen[exponent]
        return negative ? -magnitude : magnitude
    }
}
