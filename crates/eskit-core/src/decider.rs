//! The decider pattern: `decide(state, command) -> events` and
//! `evolve(state, event) -> state`, both pure.

/// Domain logic as pure functions over state, commands and events.
///
/// ```
/// use eskit_core::handler::Decider;
/// struct Counter;
/// #[derive(Debug)] struct TooHigh;
/// impl std::fmt::Display for TooHigh { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("too high") } }
/// impl std::error::Error for TooHigh {}
/// impl Decider for Counter {
///     type State = u32;
///     type Command = u32;
///     type Event = u32;
///     type Error = TooHigh;
///     fn initial_state(&self) -> u32 { 0 }
///     fn decide(&self, state: &u32, add: &u32) -> Result<Vec<u32>, TooHigh> {
///         if state + add > 10 { Err(TooHigh) } else { Ok(vec![*add]) }
///     }
///     fn evolve(&self, state: u32, event: &u32) -> u32 { state + event }
/// }
/// assert_eq!(Counter.fold(&[1, 2, 3]), 6);
/// ```
pub trait Decider: Send + Sync + 'static {
    /// The state decisions are made on.
    type State: Send + Sync;
    /// The commands it accepts.
    type Command: Send + Sync;
    /// The events it produces and evolves from.
    type Event: Send + Sync;
    /// Why a command is rejected.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The state of a stream with no events.
    fn initial_state(&self) -> Self::State;

    /// Decides which events a command produces in the given state; an empty
    /// list means "nothing to do".
    ///
    /// # Errors
    /// The domain's reason to reject the command.
    fn decide(
        &self,
        state: &Self::State,
        command: &Self::Command,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// Applies one event to the state.
    fn evolve(&self, state: Self::State, event: &Self::Event) -> Self::State;

    /// Replays events from the initial state.
    fn fold<'a>(&self, events: impl IntoIterator<Item = &'a Self::Event>) -> Self::State
    where
        Self::Event: 'a,
    {
        self.fold_from(self.initial_state(), events)
    }

    /// Replays events from a given state.
    fn fold_from<'a>(
        &self,
        state: Self::State,
        events: impl IntoIterator<Item = &'a Self::Event>,
    ) -> Self::State
    where
        Self::Event: 'a,
    {
        events.into_iter().fold(state, |s, e| self.evolve(s, e))
    }
}
