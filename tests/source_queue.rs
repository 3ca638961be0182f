//! The source queue is bounded: a burst beyond it is counted, recorded as an event, and the
//! source is asked to reconcile; priority overrides from the config apply to every event.

mod common;

use common::{model_config, plain_config, sample_event};
use ovs_port_agent::engine::Engine;
use ovs_port_agent::event::Priority;
use ovs_port_agent::layout::Layout;
use ovs_port_agent::sources::Recorder;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn an_overflowing_burst_is_counted_recorded_and_reconciled() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = plain_config();
    config.embedding = model_config();
    config.sources.queue_capacity = 16;
    config.sources.priorities.insert("link.down".into(), Priority::Critical);
    let engine = Arc::new(Engine::open(&Layout::state(tmp.path()), &config).unwrap());
    let recorder = Recorder::new(&config.sources);
    let sink = recorder.sink("ovsdb");
    let stats = recorder.stats.clone();
    // The burst arrives before the recorder drains anything: 16 fit, 84 overflow.
    for i in 0..100 {
        sink.emit(sample_event(i));
    }
    let resync = sink.resync.clone();
    rt.block_on(async {
        let notified = resync.notified();
        tokio::spawn(recorder.run(engine.clone(), Default::default(), ovs_port_agent::supervisor::Stopping::never()));
        tokio::time::timeout(Duration::from_secs(10), notified).await.expect("the source was asked to reconcile");
        // Give the recorder a moment to append the overflow event it queued.
        for _ in 0..100 {
            if engine.writer().head().borrow().0 >= 17 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(stats.overflowed.load(std::sync::atomic::Ordering::Relaxed), 84);
    let records = common::ledger_records(tmp.path());
    assert_eq!(records.len(), 17, "16 queued events and the overflow event");
    let overflow = records.last().unwrap();
    assert_eq!((overflow.element_id.as_str(), overflow.action.as_str()), ("agent:sources", "queue.overflow"));
    assert_eq!(overflow.details["events_lost"], 84);
    assert_eq!(overflow.details["source"], "ovsdb");
    // sample_event(2) is an OVS link.down (high by the source's rules): the override wins.
    let link_down = records.iter().find(|r| r.action == "link.down").unwrap();
    assert_eq!(link_down.priority, Priority::Critical);
}
