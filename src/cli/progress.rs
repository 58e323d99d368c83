//! Progress of long waits: a line every few seconds saying what is still under way, so that
//! a slow machine is not taken for a hung command.

use std::time::Duration;

/// How often a long wait says it is still under way.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Awaits `work`, calling `progress` with the time waited every `every` until it is done.
pub(crate) async fn with_progress<T>(
    work: impl Future<Output = T>,
    every: Duration,
    mut progress: impl FnMut(Duration),
) -> T {
    let began = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval_at(began + every, every);
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => progress(began.elapsed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_long_start_says_it_is_still_under_way() {
        let mut said = Vec::new();
        let done = with_progress(
            async {
                tokio::time::sleep(Duration::from_secs(12)).await;
                7
            },
            PROGRESS_EVERY,
            |waited| said.push(waited.as_secs()),
        )
        .await;
        assert_eq!((done, said), (7, vec![5, 10]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_start_says_nothing_more() {
        let mut said = 0;
        let done = with_progress(async { 1 }, PROGRESS_EVERY, |_| said += 1).await;
        assert_eq!((done, said), (1, 0));
    }
}
