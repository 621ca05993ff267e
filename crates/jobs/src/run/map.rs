//! Map tasks: read a share of the window's raw row groups, cut the
//! readings by score task, write them as one staged object; and the score
//! task's side, gathering its section of every map output.

use std::sync::Arc;
use std::time::Instant;

use fleetscore_codecs::Readings;
use fleetscore_store::lake::{self, LakeError};
use fleetscore_store::{Listed, Store};
use futures::stream::{self, StreamExt, TryStreamExt};
use rustc_hash::FxHashMap;

use crate::db::{JobRecord, TaskRecord};
use crate::stage::{MapPiece, Section, SectionKey};

use super::score::TaskPlan;
use super::{Result, RunError, Runner, Selection};
use fleetscore_store::lake::work::map_key;

/// A map task's output in memory: one section per score task.
pub(super) struct MapOut {
    pub(super) plan_id: String,
    pub(super) sections: Vec<Section>,
}

/// Reads a map task's row groups of one raw object by ranged reads (see
/// [`lake::read_raw_row_groups`]): the object must still be the one
/// planned.
pub(super) async fn read_piece(store: &Store, piece: MapPiece) -> Result<Readings> {
    let key = piece.key.as_str();
    let listed = Listed {
        key: piece.key.clone(),
        size: piece.size,
        version: piece.version.clone(),
    };
    match lake::read_raw_row_groups(store, &listed, &piece.row_groups).await {
        Ok(Some(readings)) => Ok(readings),
        Ok(None) => Err(RunError::Stale(format!(
            "the raw object {key} is gone from the store {} since the job was planned; retry \
             the job to plan it again",
            store.url()
        ))),
        Err(LakeError::Changed { reason, .. }) => Err(RunError::Stale(format!(
            "the raw object {key} in the store {} changed since the job was planned ({reason}); \
             retry the job to plan it again",
            store.url()
        ))),
        Err(e) => Err(e.into()),
    }
}

impl Runner {
    /// One attempt of a map task: read its row groups, keep the window's
    /// readings of raw-input pairs, cut them by score task, and write them
    /// as one object (`staging/<job>/<plan>/map-<m>.bin`).
    #[tracing::instrument(name = "map_task", skip_all, fields(job_id = job.id, task = record.idx))]
    pub(super) async fn attempt_map(&self, job: &JobRecord, record: &mut TaskRecord) -> Result<()> {
        let t = Instant::now();
        let plan = self.job_plan(record).await?;
        let m = record.idx - plan.tasks;
        let pieces = plan.maps[m as usize].clone();
        let (from, to) = (job.window_start, job.window_end);
        // Read the pieces (a few at once), in order.
        let read: Vec<Readings> = stream::iter(pieces)
            .map(|piece| read_piece(&self.store, piece))
            .buffered(4)
            .try_collect()
            .await?;
        record.counts.load_ms = t.elapsed().as_millis() as u64;
        let p = Arc::clone(&plan);
        let selection = Selection::of(job);
        let (sections, rows) = tokio::task::spawn_blocking(move || {
            let mut sections: Vec<Section> = vec![Section::default(); p.task_units.len()];
            // Each pair met so far: its task and its id there, if wanted.
            let mut at: FxHashMap<(&str, &str), Option<(u32, u32)>> = FxHashMap::default();
            let mut rows = 0u64;
            for r in &read {
                // Per key of the piece: its task and its id there.
                let dest: Vec<Option<(u32, u32)>> = r
                    .keys()
                    .map(|(d, tg)| {
                        *at.entry((d, tg)).or_insert_with(|| {
                            let chosen = || selection.contains(d, tg);
                            let (task, unit) = p.route(d, tg, chosen)?;
                            let keys = &mut sections[task as usize].keys;
                            keys.push(match unit {
                                Some(i) => SectionKey::Unit(i),
                                None => SectionKey::Other(d.to_owned(), tg.to_owned()),
                            });
                            Some((task, keys.len() as u32 - 1))
                        })
                    })
                    .collect();
                let (r_ts, r_value, r_key) = (r.ts(), r.values(), r.key_ids());
                for i in 0..r.len() {
                    let ts = r_ts[i];
                    if ts < from || ts >= to {
                        continue;
                    }
                    if let Some((task, id)) = dest[r_key[i] as usize] {
                        let s = &mut sections[task as usize];
                        s.ts.push(ts);
                        s.value.push(r_value[i]);
                        s.key.push(id);
                        rows += 1;
                    }
                }
            }
            for s in &mut sections {
                s.drop_unused_keys();
            }
            (sections, rows)
        })
        .await?;
        let t_write = Instant::now();
        let out = MapOut {
            plan_id: plan.plan_id.clone(),
            sections,
        };
        let out = tokio::task::spawn_blocking(move || {
            let bytes = crate::stage::encode_map(&out.plan_id, &out.sections);
            (out, bytes)
        })
        .await?;
        let key = map_key(job.id, &plan.plan_id, m);
        self.store.put(&key, out.1).await?;
        record.counts.write_ms = t_write.elapsed().as_millis() as u64;
        record.counts.rows = rows;
        record.output = Some(key);
        if let Ok(mut c) = self.staged.lock() {
            c.maps.insert((job.id, m), Arc::new(out.0));
        }
        Ok(())
    }

    /// A score task's readings: its section of every map task's output,
    /// in order (from memory for the map tasks this process ran).
    pub(super) async fn gather(&self, plan: &TaskPlan) -> Result<Readings> {
        /// A section kept in memory by its map task, or read.
        enum Got {
            Kept(Arc<MapOut>),
            Read(Section),
        }
        let job = plan.job;
        let sections: Vec<Got> = stream::iter(0..plan.maps)
            .map(|m| async move {
                let kept = self
                    .staged
                    .lock()
                    .ok()
                    .and_then(|c| c.maps.get(&(job, m)).cloned());
                match kept.filter(|o| o.plan_id == plan.plan_id) {
                    Some(out) => Ok::<_, RunError>(Got::Kept(out)),
                    None => Ok(Got::Read(self.read_section(plan, m).await?)),
                }
            })
            .buffered(8)
            .try_collect()
            .await?;
        let empty = Section::default();
        let refs: Vec<&Section> = sections
            .iter()
            .map(|s| match s {
                Got::Kept(out) => out.sections.get(plan.idx as usize).unwrap_or(&empty),
                Got::Read(r) => r,
            })
            .collect();
        crate::stage::gather_sections(&plan.units, &refs).map_err(|e| {
            RunError::Stale(format!(
                "the map outputs of job {} do not fit task {}'s plan: {e}",
                plan.job, plan.idx
            ))
        })
    }

    /// Reads a score task's section of map output `m` from the store.
    pub(super) async fn read_section(&self, plan: &TaskPlan, m: u32) -> Result<Section> {
        let (job, key) = (plan.job, map_key(plan.job, &plan.plan_id, m));
        let corrupt =
            |e: String| RunError::Stale(format!("the map output {key} does not read: {e}"));
        let missing = || {
            RunError::Stale(format!(
                "the map output {key} is missing from the store {}",
                self.store.url()
            ))
        };
        let cached = self.staged.lock().ok().and_then(|c| {
            c.headers
                .get(&(job, m))
                .filter(|(id, _)| *id == plan.plan_id)
                .map(|(_, h)| h.clone())
        });
        let header = match cached {
            Some(h) => h,
            None => {
                let n = crate::stage::header_len(&plan.plan_id, plan.tasks) as u64;
                let h = self
                    .store
                    .get_range(&key, 0..n)
                    .await?
                    .ok_or_else(missing)?
                    .to_vec();
                // Checked before it is kept.
                crate::stage::section_range(&h, &plan.plan_id, plan.tasks, 0).map_err(corrupt)?;
                if let Ok(mut c) = self.staged.lock() {
                    c.headers
                        .insert((job, m), (plan.plan_id.clone(), h.clone()));
                }
                h
            }
        };
        let range = crate::stage::section_range(&header, &plan.plan_id, plan.tasks, plan.idx)
            .map_err(corrupt)?;
        if range.is_empty() {
            return Ok(Section::default());
        }
        let want = range.end - range.start;
        let bytes = self
            .store
            .get_range(&key, range)
            .await?
            .ok_or_else(missing)?;
        if bytes.len() as u64 != want {
            return Err(RunError::Stale(format!(
                "the map output {key} ends {} bytes short of section {}",
                want - bytes.len() as u64,
                plan.idx
            )));
        }
        tokio::task::spawn_blocking(move || crate::stage::decode_section(&bytes))
            .await?
            .map_err(corrupt)
    }
}
