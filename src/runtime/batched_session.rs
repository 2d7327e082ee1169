//! An ONNX Runtime session behind a [`Batcher`]: single-input float models whose first
//! dimension is the batch (the face encoders, YuNet). Items of one shape are stacked into one
//! tensor, padded with zero rows, and each model output is cut back into one slice per item.

use ort::session::Session;
use ort::value::TensorRef;

use super::batch::{Backend, BatchClient, BatchError, BatchPolicy, Batcher};

/// One input of a batched model: its values and its shape without the batch dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorItem {
    /// Values, `dims` in row-major order.
    pub data: Vec<f32>,
    /// Shape of one item (e.g. `[64, 64, 1]`, `[3, 192, 320]`).
    pub dims: Vec<usize>,
}

/// What one item gives: its share of every model output (in the session's output order), and
/// its input buffer back, for reuse.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorOutput {
    /// Per model output, this item's values.
    pub outputs: Vec<Vec<f32>>,
    /// The item's input values (returned so the caller can reuse the allocation).
    pub input: Vec<f32>,
}

/// The backend: a session, its input name and a reused batch tensor.
pub struct SessionBackend {
    session: Session,
    input_name: String,
    batch: Vec<f32>,
}

/// A shared, batched session.
pub type BatchedSession = Batcher<SessionBackend>;
/// One stream's handle on a [`BatchedSession`].
pub type SessionClient = BatchClient<SessionBackend>;

impl SessionBackend {
    /// Wraps `session`, feeding its input `input_name`.
    pub fn new(session: Session, input_name: impl Into<String>) -> Self {
        Self {
            session,
            input_name: input_name.into(),
            batch: Vec::new(),
        }
    }

    /// Starts the shared session: warmed at every batch size for each shape of `warm`.
    pub fn start(
        self,
        name: &str,
        policy: BatchPolicy,
        warm: &[Vec<usize>],
    ) -> Result<BatchedSession, BatchError> {
        Batcher::start(name, self, policy, warm)
    }

    fn infer(
        &mut self,
        dims: &[usize],
        items: &[TensorItem],
        padded: usize,
    ) -> ort::Result<Vec<Vec<Vec<f32>>>> {
        let per_item: usize = dims.iter().product();
        let mut shape = Vec::with_capacity(dims.len() + 1);
        shape.push(padded);
        shape.extend_from_slice(dims);
        let data: &[f32] = if let ([item], 1) = (items, padded) {
            &item.data
        } else {
            self.batch.clear();
            for item in items {
                self.batch.extend_from_slice(&item.data);
            }
            self.batch.resize(padded * per_item, 0.0);
            &self.batch
        };
        let input = TensorRef::from_array_view((shape, data))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => input])?;
        let mut per_output = Vec::with_capacity(outputs.len());
        for value in outputs.values() {
            let (_, raw) = value.try_extract_tensor::<f32>()?;
            if raw.len() % padded != 0 {
                return Err(ort::Error::new(format!(
                    "an output of {} values does not split into {padded} rows",
                    raw.len()
                )));
            }
            let row = raw.len() / padded;
            per_output.push(
                (0..items.len())
                    .map(|i| raw[i * row..(i + 1) * row].to_vec())
                    .collect::<Vec<_>>(),
            );
        }
        Ok(per_output)
    }
}

impl Backend for SessionBackend {
    type Item = TensorItem;
    type Output = TensorOutput;
    type Key = Vec<usize>;

    fn key(item: &TensorItem) -> Vec<usize> {
        item.dims.clone()
    }

    fn run(&mut self, items: Vec<TensorItem>, padded: usize) -> Result<Vec<TensorOutput>, String> {
        let Some(dims) = items.first().map(|i| i.dims.clone()) else {
            return Ok(Vec::new());
        };
        let per_item: usize = dims.iter().product();
        if let Some(bad) = items.iter().find(|i| i.data.len() != per_item) {
            return Err(format!(
                "an input of {} values for shape {dims:?}",
                bad.data.len()
            ));
        }
        let per_output = self
            .infer(&dims, &items, padded.max(items.len()))
            .map_err(|e| e.to_string())?;
        let mut outputs: Vec<TensorOutput> = items
            .into_iter()
            .map(|item| TensorOutput {
                outputs: Vec::with_capacity(per_output.len()),
                input: item.data,
            })
            .collect();
        for rows in per_output {
            for (out, row) in outputs.iter_mut().zip(rows) {
                out.outputs.push(row);
            }
        }
        Ok(outputs)
    }

    fn warm(&mut self, key: &Vec<usize>, padded: usize) -> Result<(), String> {
        let blank = TensorItem {
            data: vec![0.0; key.iter().product()],
            dims: key.clone(),
        };
        self.infer(key, &[blank], padded)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
