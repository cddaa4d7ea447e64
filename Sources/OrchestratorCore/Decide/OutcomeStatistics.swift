/// What past results say about invoking a module for a kind of trigger (docs/decisions.md,
/// "Outcome learning"): counts and benefit sums, persisted in `outcomes` and reloaded at start.
///
/// The estimates carry a prior so that a module nobody has measured yet is tried: a success rate
/// of 2 in 3 and `prior_benefit` per success, each worth 3 observations. A module that keeps failing
/// or bringing nothing sinks below its cost and is invoked less (see ``SelectionCriteria``).
package struct OutcomeStatistics: Sendable, Equatable {
    package struct Key: Sendable, Hashable {
        package let triggerKind: String
        package let module: String

        package init(triggerKind: String, module: String) {
            self.triggerKind = triggerKind
            self.module = module
        }
    }

    package var invocations = 0
    package var successes = 0
    package var benefitSum = 0.0
    package var benefitSquareSum = 0.0

    static let priorSuccesses = 2.0
    static let priorFailures = 1.0
    static let priorWeight = 3.0

    package init(invocations: Int = 0, successes: Int = 0, benefitSum: Double = 0, benefitSquareSum: Double = 0) {
        self.invocations = invocations
        self.successes = successes
        self.benefitSum = benefitSum
        self.benefitSquareSum = benefitSquareSum
    }

    /// Counts one finished invocation. A timeout or error is a failure with no benefit; a
    /// non-finite benefit counts as none.
    package mutating func record(success: Bool, benefit: Double?) {
        self.invocations += 1
        guard success else { return }
        self.successes += 1
        let value = benefit.flatMap { $0.isFinite ? $0 : nil } ?? 0
        self.benefitSum += value
        self.benefitSquareSum += value * value
    }

    /// Posterior mean of the success rate.
    package var successRate: Double {
        (Double(self.successes) + Self.priorSuccesses) / (Double(self.invocations) + Self.priorSuccesses + Self.priorFailures)
    }

    /// Posterior mean benefit of a successful invocation.
    package func meanBenefit(prior: Double) -> Double {
        (self.benefitSum + prior * Self.priorWeight) / (Double(self.successes) + Self.priorWeight)
    }

    /// Expected benefit of one more invocation.
    package func expectedBenefit(prior: Double) -> Double {
        self.successRate * self.meanBenefit(prior: prior)
    }
}
