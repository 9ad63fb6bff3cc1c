//! Launchers for our kernels (`kernels/*.cu`), on candle tensors.
//!
//! Tensors must live on this GPU and be contiguous; the launchers check
//! shapes and types, then pass raw device pointers. Everything runs on
//! candle's stream for the device, so our kernels and candle's operations
//! are ordered without extra synchronization.

use super::device::explain;
use super::ptx;
use anyhow::{bail, ensure, Context, Result};
use candle_core::cuda_backend::CudaDevice;
use candle_core::{DType, Device, Storage, Tensor};
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaFunction, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use std::sync::Arc;

/// Head sizes the attention kernel is instantiated for.
pub const HEAD_DIMS: [usize; 4] = [32, 64, 128, 256];

/// Keys per split of the decode attention, at least.
const MIN_SPLIT: usize = 64;
/// Threads of an attention block (kernels/attention.cu: ATTN_WARPS * 32).
const ATTN_THREADS: u32 = 128;
/// Threads of a sampling block (kernels/sampling.cu: SAMPLE_THREADS).
pub(crate) const SAMPLE_THREADS: u32 = 1024;

/// The shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Slots per sequence in the cache (position p lives in slot p % cap).
    pub cap: usize,
    /// Sliding window in positions; 0 for global attention.
    pub window: usize,
}

/// Rotary embedding (and the per-head norm before it) of one layer.
#[derive(Debug, Clone, Copy)]
pub struct RopeArgs<'a> {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// `base^(-2 / head_dim)`, computed on the host as
    /// `cpu::ops::rope_cos_sin` does.
    pub theta_scale: f32,
    /// 1 / the linear rope scaling factor.
    pub freq_scale: f32,
    /// Queries are multiplied by this after rotation.
    pub q_scale: f32,
    /// RMSNorm weights of each query / key head (`head_dim` values).
    pub q_norm: Option<&'a Tensor>,
    pub k_norm: Option<&'a Tensor>,
    pub norm_offset: f32,
    pub eps: f32,
}

/// Our kernels, loaded on one GPU.
pub struct Kernels {
    device: Device,
    stream: Arc<CudaStream>,
    rms_norm: CudaFunction,
    gelu_mul: CudaFunction,
    rope_qk: CudaFunction,
    kv_append: CudaFunction,
    attn: [CudaFunction; 4],
    attn_combine: CudaFunction,
    pub(crate) sample: CudaFunction,
    sm_count: usize,
}

fn load(dev: &CudaDevice, module: &str, ptx: &str, name: &str) -> Result<CudaFunction> {
    match dev.get_or_load_custom_func(name, module, ptx) {
        Ok(f) => Ok(f.into_cuda_function()),
        Err(e) => match driver_error(&e) {
            // Name the driver's reason (an old driver cannot JIT new PTX).
            Some(d) => bail!("loading kernel {name}: {}", explain(d, None)),
            None => bail!(
                "loading kernel {name}: {}",
                e.to_string().lines().next().unwrap_or_default()
            ),
        },
    }
}

/// The driver error inside a candle error, if that is what it is.
pub(crate) fn driver_error(e: &candle_core::Error) -> Option<&cudarc::driver::DriverError> {
    use candle_core::cuda_backend::CudaError;
    match e {
        candle_core::Error::WithBacktrace { inner, .. }
        | candle_core::Error::Context { inner, .. }
        | candle_core::Error::WithPath { inner, .. } => driver_error(inner),
        candle_core::Error::Cuda(inner) => match inner.downcast_ref::<CudaError>()? {
            CudaError::Cuda(d) | CudaError::Load { cuda: d, .. } => Some(d),
            _ => None,
        },
        _ => None,
    }
}

fn cfg(grid: (u32, u32, u32), block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn u32_of(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).with_context(|| format!("{what} {n} is too large for a kernel launch"))
}

fn i32_of(n: usize, what: &str) -> Result<i32> {
    i32::try_from(n).with_context(|| format!("{what} {n} is too large for a kernel launch"))
}

impl Kernels {
    /// Loads every kernel on `device` (a CUDA device).
    pub fn new(device: &Device) -> Result<Self> {
        let Device::Cuda(dev) = device else {
            bail!("the CUDA kernels need a CUDA device, not {device:?}");
        };
        let find = |module: &str| -> Result<&'static str> {
            ptx::ALL
                .iter()
                .find(|(m, _)| *m == module)
                .map(|(_, p)| *p)
                .with_context(|| format!("no PTX for kernels/{module}.cu"))
        };
        let (norm, rope, attention, sampling) = (
            find("norm")?,
            find("rope")?,
            find("attention")?,
            find("sampling")?,
        );
        let attn = [
            load(dev, "attention", attention, "attn_decode_f16_hd32")?,
            load(dev, "attention", attention, "attn_decode_f16_hd64")?,
            load(dev, "attention", attention, "attn_decode_f16_hd128")?,
            load(dev, "attention", attention, "attn_decode_f16_hd256")?,
        ];
        let stream = dev.cuda_stream();
        let sm_count = stream
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .unwrap_or(16)
            .max(1) as usize;
        Ok(Self {
            rms_norm: load(dev, "norm", norm, "rms_norm_f32")?,
            gelu_mul: load(dev, "norm", norm, "gelu_mul_f32")?,
            rope_qk: load(dev, "rope", rope, "rope_qk_f32")?,
            kv_append: load(dev, "rope", rope, "kv_append_f16")?,
            attn,
            attn_combine: load(dev, "attention", attention, "attn_combine_f32")?,
            sample: load(dev, "sampling", sampling, "sample_f32")?,
            device: device.clone(),
            stream,
            sm_count,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The device address of `t`'s first element. `t` must stay alive
    /// until the kernel it is passed to has been queued (frees are ordered
    /// on the stream after it).
    pub(crate) fn ptr(&self, t: &Tensor, dtype: DType) -> Result<u64> {
        ensure!(
            t.dtype() == dtype,
            "kernel argument is {:?}, expected {dtype:?}",
            t.dtype()
        );
        ensure!(t.is_contiguous(), "kernel argument must be contiguous");
        ensure!(
            t.device().same_device(&self.device),
            "kernel argument is not on this GPU"
        );
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cuda(cs) = &*storage else {
            bail!("kernel argument is not on the GPU");
        };
        let s = &self.stream;
        let base = match dtype {
            DType::F32 => cs.as_cuda_slice::<f32>()?.device_ptr(s).0,
            DType::F16 => cs.as_cuda_slice::<half::f16>()?.device_ptr(s).0,
            DType::BF16 => cs.as_cuda_slice::<half::bf16>()?.device_ptr(s).0,
            DType::U32 => cs.as_cuda_slice::<u32>()?.device_ptr(s).0,
            DType::U8 => cs.as_cuda_slice::<u8>()?.device_ptr(s).0,
            d => bail!("no kernel takes {d:?} tensors"),
        };
        Ok(base + (layout.start_offset() * dtype.size_in_bytes()) as u64)
    }

    /// Row-wise RMSNorm of `x` (rows x n, n = `w.len()`) with weight
    /// `w + offset`: into `out` (same shape; may be `x`), or added to it
    /// when `add` (Gemma's post-norms: `residual += norm(x) * w`).
    pub fn rms_norm(
        &self,
        x: &Tensor,
        w: &Tensor,
        offset: f32,
        eps: f32,
        out: &Tensor,
        add: bool,
    ) -> Result<()> {
        let n = w.elem_count();
        ensure!(
            n > 0 && x.elem_count().is_multiple_of(n),
            "rms_norm: {} values are not rows of {n}",
            x.elem_count()
        );
        ensure!(
            out.elem_count() == x.elem_count(),
            "rms_norm: output of {} values for {}",
            out.elem_count(),
            x.elem_count()
        );
        let rows = x.elem_count() / n;
        if rows == 0 {
            return Ok(());
        }
        let (px, pw, po) = (
            self.ptr(x, DType::F32)?,
            self.ptr(w, DType::F32)?,
            self.ptr(out, DType::F32)?,
        );
        let (n32, add32) = (i32_of(n, "row length")?, i32::from(add));
        let threads = if n >= 1024 { 512 } else { 256 };
        let mut b = self.stream.launch_builder(&self.rms_norm);
        b.arg(&px)
            .arg(&pw)
            .arg(&offset)
            .arg(&po)
            .arg(&n32)
            .arg(&eps)
            .arg(&add32);
        // SAFETY: the arguments match the kernel's signature; the buffers
        // hold rows x n f32 values (checked above).
        unsafe { b.launch(cfg((u32_of(rows, "rows")?, 1, 1), threads)) }?;
        Ok(())
    }

    /// `out = gelu_tanh(gate) * up`, element-wise (`out` may be `gate`).
    pub fn gelu_mul(&self, gate: &Tensor, up: &Tensor, out: &Tensor) -> Result<()> {
        let n = gate.elem_count();
        ensure!(
            up.elem_count() == n && out.elem_count() == n,
            "gelu_mul: sizes differ"
        );
        if n == 0 {
            return Ok(());
        }
        let (pg, pu, po) = (
            self.ptr(gate, DType::F32)?,
            self.ptr(up, DType::F32)?,
            self.ptr(out, DType::F32)?,
        );
        let n64 = n as i64;
        let blocks = n.div_ceil(256).min(self.sm_count * 32);
        let mut b = self.stream.launch_builder(&self.gelu_mul);
        b.arg(&pg).arg(&pu).arg(&po).arg(&n64);
        // SAFETY: three buffers of n f32 values.
        unsafe { b.launch(cfg((blocks as u32, 1, 1), 256)) }?;
        Ok(())
    }

    /// Per-head RMSNorm (when weights are given) and NEOX rotary embedding
    /// of `q` (rows x n_heads*head_dim) and `k` (rows x n_kv_heads*head_dim)
    /// in place, at the positions `pos` (u32, one per row); queries are
    /// then multiplied by `q_scale`.
    pub fn rope_qk(&self, q: &Tensor, k: &Tensor, pos: &Tensor, a: &RopeArgs) -> Result<()> {
        let rows = pos.elem_count();
        let hd = a.head_dim;
        ensure!(
            hd.is_multiple_of(2) && hd / 2 <= 1024,
            "rope: head size {hd} is not supported"
        );
        ensure!(
            q.elem_count() == rows * a.n_heads * hd && k.elem_count() == rows * a.n_kv_heads * hd,
            "rope: q/k sizes do not match {rows} rows"
        );
        for w in [a.q_norm, a.k_norm].into_iter().flatten() {
            ensure!(
                w.elem_count() == hd,
                "rope: norm weight of {} values for heads of {hd}",
                w.elem_count()
            );
        }
        if rows == 0 {
            return Ok(());
        }
        let (pq, pk, pp) = (
            self.ptr(q, DType::F32)?,
            self.ptr(k, DType::F32)?,
            self.ptr(pos, DType::U32)?,
        );
        let pqn = match a.q_norm {
            Some(w) => self.ptr(w, DType::F32)?,
            None => 0u64,
        };
        let pkn = match a.k_norm {
            Some(w) => self.ptr(w, DType::F32)?,
            None => 0u64,
        };
        let (nq, nk, hd32) = (
            i32_of(a.n_heads, "heads")?,
            i32_of(a.n_kv_heads, "kv heads")?,
            hd as i32,
        );
        let threads = (hd / 2).next_multiple_of(32) as u32;
        let mut b = self.stream.launch_builder(&self.rope_qk);
        b.arg(&pq)
            .arg(&pk)
            .arg(&pp)
            .arg(&pqn)
            .arg(&pkn)
            .arg(&a.norm_offset)
            .arg(&a.eps)
            .arg(&nq)
            .arg(&nk)
            .arg(&hd32)
            .arg(&a.theta_scale)
            .arg(&a.freq_scale)
            .arg(&a.q_scale);
        let grid = (u32_of(rows, "rows")?, (a.n_heads + a.n_kv_heads) as u32, 1);
        // SAFETY: sizes checked above; null norm pointers mean no norm.
        unsafe { b.launch(cfg(grid, threads)) }?;
        Ok(())
    }

    /// Appends `k` and `v` (rows x kv_dim f32) to the f16 caches `kc`/`vc`
    /// (sequences x cap x kv_dim): row r goes to sequence `seq[r]`, slot
    /// `pos[r] % cap`.
    #[allow(clippy::too_many_arguments)]
    pub fn kv_append(
        &self,
        k: &Tensor,
        v: &Tensor,
        kc: &Tensor,
        vc: &Tensor,
        pos: &Tensor,
        seq: &Tensor,
        cap: usize,
    ) -> Result<()> {
        let rows = pos.elem_count();
        ensure!(
            rows > 0 && seq.elem_count() == rows,
            "kv_append: {rows} positions, {} sequences",
            seq.elem_count()
        );
        let kv_dim = k.elem_count() / rows;
        ensure!(
            k.elem_count() == rows * kv_dim && v.elem_count() == k.elem_count(),
            "kv_append: k/v sizes differ"
        );
        let seq_stride = cap * kv_dim;
        ensure!(
            cap > 0
                && kc.elem_count().is_multiple_of(seq_stride)
                && vc.elem_count() == kc.elem_count(),
            "kv_append: caches are not sequences x {cap} x {kv_dim}"
        );
        let (pk, pv, pkc, pvc, pp, ps) = (
            self.ptr(k, DType::F32)?,
            self.ptr(v, DType::F32)?,
            self.ptr(kc, DType::F16)?,
            self.ptr(vc, DType::F16)?,
            self.ptr(pos, DType::U32)?,
            self.ptr(seq, DType::U32)?,
        );
        let (kvd, cap32, stride) = (
            i32_of(kv_dim, "kv size")?,
            i32_of(cap, "cache slots")?,
            seq_stride as i64,
        );
        let mut b = self.stream.launch_builder(&self.kv_append);
        b.arg(&pk)
            .arg(&pv)
            .arg(&pkc)
            .arg(&pvc)
            .arg(&pp)
            .arg(&ps)
            .arg(&kvd)
            .arg(&cap32)
            .arg(&stride);
        // SAFETY: sizes checked; the caller guarantees seq[r] < sequences.
        unsafe { b.launch(cfg((u32_of(rows, "rows")?, 1, 1), 256)) }?;
        Ok(())
    }

    /// Attention of each row's query (`q`: rows x n_heads*head_dim, already
    /// scaled) over its sequence's cached keys at positions
    /// `[lo, pos[r]]` (lo = pos + 1 - window on sliding layers), written to
    /// `out` (same shape as `q`). Long spans are split over the sequence and
    /// merged.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        q: &Tensor,
        kc: &Tensor,
        vc: &Tensor,
        pos: &Tensor,
        seq: &Tensor,
        positions: &[usize],
        out: &Tensor,
        s: &AttnShape,
    ) -> Result<()> {
        let rows = positions.len();
        let hd = s.head_dim;
        let which = HEAD_DIMS
            .iter()
            .position(|&d| d == hd)
            .with_context(|| format!("attention: head size {hd} is not one of {HEAD_DIMS:?}"))?;
        ensure!(
            s.n_kv_heads > 0 && s.n_heads.is_multiple_of(s.n_kv_heads),
            "attention: {} heads over {} kv heads",
            s.n_heads,
            s.n_kv_heads
        );
        ensure!(
            pos.elem_count() == rows && seq.elem_count() == rows,
            "attention: position/sequence counts"
        );
        ensure!(
            q.elem_count() == rows * s.n_heads * hd && out.elem_count() == q.elem_count(),
            "attention: q/out sizes do not match {rows} rows"
        );
        let seq_stride = s.cap * s.n_kv_heads * hd;
        ensure!(
            s.cap > 0
                && kc.elem_count().is_multiple_of(seq_stride)
                && vc.elem_count() == kc.elem_count(),
            "attention: caches are not sequences x {} x {}",
            s.cap,
            s.n_kv_heads * hd
        );
        if rows == 0 {
            return Ok(());
        }
        // Split the longest span so the GPU has about two blocks per SM.
        let span = |p: usize| {
            if s.window > 0 {
                (p + 1).min(s.window)
            } else {
                p + 1
            }
        };
        let longest = positions.iter().map(|&p| span(p)).max().unwrap_or(1);
        let blocks = rows * s.n_heads;
        let want = (2 * self.sm_count).div_ceil(blocks).max(1);
        let splits = want.min(longest.div_ceil(MIN_SPLIT)).max(1);
        let split_len = longest.div_ceil(splits);
        let splits = longest.div_ceil(split_len);
        let part = if splits > 1 {
            Some(Tensor::zeros(
                rows * s.n_heads * splits * (hd + 2),
                DType::F32,
                &self.device,
            )?)
        } else {
            None
        };
        let (pq, pkc, pvc, pp, ps, po) = (
            self.ptr(q, DType::F32)?,
            self.ptr(kc, DType::F16)?,
            self.ptr(vc, DType::F16)?,
            self.ptr(pos, DType::U32)?,
            self.ptr(seq, DType::U32)?,
            self.ptr(out, DType::F32)?,
        );
        let ppart = match &part {
            Some(t) => self.ptr(t, DType::F32)?,
            None => 0u64,
        };
        let (nq, nkv, cap, stride, window, slen) = (
            i32_of(s.n_heads, "heads")?,
            i32_of(s.n_kv_heads, "kv heads")?,
            i32_of(s.cap, "cache slots")?,
            seq_stride as i64,
            i32_of(s.window, "window")?,
            i32_of(split_len, "split")?,
        );
        let mut b = self.stream.launch_builder(&self.attn[which]);
        b.arg(&pq)
            .arg(&pkc)
            .arg(&pvc)
            .arg(&pp)
            .arg(&ps)
            .arg(&po)
            .arg(&ppart)
            .arg(&nq)
            .arg(&nkv)
            .arg(&cap)
            .arg(&stride)
            .arg(&window)
            .arg(&slen);
        let grid = (s.n_heads as u32, u32_of(rows, "rows")?, splits as u32);
        // SAFETY: sizes checked above; `part` holds rows x heads x splits
        // partial results when there is more than one split.
        unsafe { b.launch(cfg(grid, ATTN_THREADS)) }?;
        if part.is_some() {
            let (hd32, sp) = (hd as i32, splits as i32);
            let mut b = self.stream.launch_builder(&self.attn_combine);
            b.arg(&ppart).arg(&po).arg(&nq).arg(&hd32).arg(&sp);
            // SAFETY: as above.
            unsafe { b.launch(cfg((s.n_heads as u32, rows as u32, 1), hd as u32)) }?;
        }
        Ok(())
    }
}
