//! Links: abnormal exits travel both ways, unless the receiver traps exits.

use ensemble::prelude::*;
use tokio::sync::mpsc;

use crate::util::*;

#[tokio::test]
async fn abnormal_exit_of_a_linked_child_kills_the_parent_with_the_same_reason() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let parent = node.spawn(Probe::new("parent", &tx)).unwrap();
    let child = spawn_child(&parent, "child", true).await;
    child.tell(Cmd::Fail("bad input")).await.unwrap();
    let reason = ExitReason::Failed("bad input".into());
    assert_eq!(within("parent exit", parent.wait_for_exit()).await, reason);
    wait_for(&mut events, &Event::Stopped("parent", reason)).await;
}

#[tokio::test]
async fn abnormal_exit_of_a_parent_kills_its_linked_and_unlinked_children() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let parent = node.spawn(Probe::new("parent", &tx)).unwrap();
    let linked = spawn_child(&parent, "linked", true).await;
    let plain = spawn_child(&parent, "plain", false).await;
    parent.tell(Cmd::Panic("oops")).await.unwrap();
    assert_eq!(
        within("parent", parent.wait_for_exit()).await,
        ExitReason::Panicked("oops".into())
    );
    // Children are stopped first, with Shutdown; the linked one may see the parent's exit
    // signal first only if the parent had already ended, which it cannot have.
    assert_eq!(
        within("linked", linked.wait_for_exit()).await,
        ExitReason::Shutdown
    );
    assert_eq!(
        within("plain", plain.wait_for_exit()).await,
        ExitReason::Shutdown
    );
}

#[tokio::test]
async fn normal_exit_does_not_kill_the_linked_actor() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let parent = node.spawn(Probe::new("parent", &tx)).unwrap();
    let child = spawn_child(&parent, "child", true).await;
    child.tell(Cmd::Stop).await.unwrap();
    assert_eq!(
        within("child", child.wait_for_exit()).await,
        ExitReason::Normal
    );
    assert_eq!(parent.ask(|r| Cmd::Echo(5, r), ASK).await.unwrap(), 5);
}

#[tokio::test]
async fn trapping_turns_exit_signals_into_on_exit_calls() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut parent = Probe::new("parent", &tx);
    parent.trap_exit = true;
    let parent = node.spawn(parent).unwrap();
    let child = spawn_child(&parent, "child", true).await;
    child.tell(Cmd::Panic("child broke")).await.unwrap();
    let reason = ExitReason::Panicked("child broke".into());
    wait_for(
        &mut events,
        &Event::Exit("parent", child.id().clone(), reason),
    )
    .await;
    assert!(parent.is_alive());
    assert_eq!(parent.ask(|r| Cmd::Echo(3, r), ASK).await.unwrap(), 3);
}

#[tokio::test]
async fn linking_to_a_dead_actor_delivers_noproc() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let dead = node.spawn(Probe::new("dead", &tx)).unwrap();
    dead.stop();
    within("dead", dead.wait_for_exit()).await;

    let mut trapper = Probe::new("trapper", &tx);
    trapper.trap_exit = true;
    let trapper = node.spawn(trapper).unwrap();
    trapper.tell(Cmd::Link(dead.clone())).await.unwrap();
    wait_for(
        &mut events,
        &Event::Exit("trapper", dead.id().clone(), ExitReason::NoProc),
    )
    .await;

    let plain = node.spawn(Probe::new("plain", &tx)).unwrap();
    plain.tell(Cmd::Link(dead.clone())).await.unwrap();
    assert_eq!(
        within("plain", plain.wait_for_exit()).await,
        ExitReason::NoProc
    );
}

#[tokio::test]
async fn unlinked_actors_no_longer_share_fate() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let a = node.spawn(Probe::new("a", &tx)).unwrap();
    let b = node.spawn(Probe::new("b", &tx)).unwrap();
    a.tell(Cmd::Link(b.clone())).await.unwrap();
    a.ask(|r| Cmd::Unlink(b.clone(), r), ASK).await.unwrap();
    b.tell(Cmd::Fail("alone")).await.unwrap();
    within("b", b.wait_for_exit()).await;
    assert_eq!(a.ask(|r| Cmd::Echo(9, r), ASK).await.unwrap(), 9);
}

#[tokio::test]
async fn a_killed_actor_kills_its_links_with_killed() {
    let node = node();
    let (tx, _events) = mpsc::unbounded_channel();
    let a = node.spawn(Probe::new("a", &tx)).unwrap();
    let b = node.spawn(Probe::new("b", &tx)).unwrap();
    a.tell(Cmd::Link(b.clone())).await.unwrap();
    // Make sure the link exists before the kill.
    a.ask(|r| Cmd::Echo(0, r), ASK).await.unwrap();
    let _release = block(&b).await;
    b.kill();
    assert_eq!(within("b", b.wait_for_exit()).await, ExitReason::Killed);
    assert_eq!(within("a", a.wait_for_exit()).await, ExitReason::Killed);
}

#[tokio::test]
async fn exit_signals_overtake_queued_messages() {
    let node = node();
    let (tx, mut events) = mpsc::unbounded_channel();
    let a = node.spawn(Probe::new("a", &tx)).unwrap();
    let b = node.spawn(Probe::new("b", &tx)).unwrap();
    a.tell(Cmd::Link(b.clone())).await.unwrap();
    a.ask(|r| Cmd::Echo(0, r), ASK).await.unwrap();
    let release = block(&a).await;
    for n in 0..50 {
        a.tell(Cmd::Note(n)).await.unwrap();
    }
    b.tell(Cmd::Fail("b failed")).await.unwrap();
    within("b", b.wait_for_exit()).await;
    release.send(()).unwrap();
    assert_eq!(
        within("a", a.wait_for_exit()).await,
        ExitReason::Failed("b failed".into())
    );
    let seen = wait_for(
        &mut events,
        &Event::Stopped("a", ExitReason::Failed("b failed".into())),
    )
    .await;
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Handled("a", _))),
        "{seen:?}"
    );
    assert_eq!(node.dead_letters(), 50);
}
