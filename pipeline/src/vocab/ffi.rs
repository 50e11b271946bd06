//! The Rust side of the trainer bridge (`shim.cpp`): hands sentences to the C++ trainer
//! through a callback and takes the serialised model back.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

use super::Sentences;

type NextSentence =
    unsafe extern "C" fn(ctx: *mut c_void, data: *mut *const c_char, len: *mut usize) -> c_int;

unsafe extern "C" {
    fn conveyor_spm_train(
        args: *const c_char,
        args_len: usize,
        seed: c_uint,
        min_log_level: c_int,
        next: NextSentence,
        ctx: *mut c_void,
        model: *mut *mut c_char,
        model_len: *mut usize,
        error: *mut *mut c_char,
    ) -> c_int;
    fn conveyor_spm_free(p: *mut c_char);
}

/// Called by the trainer for each sentence: 1 with the sentence, 0 at the end, -1 when
/// reading failed (the error is kept in `Sentences::failure`).
unsafe extern "C" fn next_sentence(
    ctx: *mut c_void,
    data: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    // SAFETY: `ctx` is the `&mut Sentences` that `train` passed and that outlives the call;
    // the trainer calls back on the thread that called `conveyor_spm_train`.
    let s = unsafe { &mut *(ctx as *mut Sentences) };
    let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.advance()));
    match step {
        Ok(Ok(true)) => {
            // SAFETY: the out-pointers are valid per the shim's contract; `s.value` stays
            // untouched until the next call, and the trainer copies it before that.
            unsafe {
                *data = s.value.as_ptr() as *const c_char;
                *len = s.value.len();
            }
            1
        }
        Ok(Ok(false)) => 0,
        Ok(Err(e)) => {
            s.failure = Some(e);
            -1
        }
        Err(_) => {
            s.failure = Some(crate::Error::Trainer("reading the corpus panicked".into()));
            -1
        }
    }
}

/// Runs the trainer with the flag string `args`; the serialised model, or the trainer's
/// message.
pub(super) fn train(
    args: &str,
    seed: u32,
    verbose: bool,
    corpus: &mut Sentences,
) -> Result<Vec<u8>, String> {
    let mut model: *mut c_char = std::ptr::null_mut();
    let mut model_len = 0usize;
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `corpus` is only used through the
    // callback while the call runs; the returned buffers are freed below with the shim's
    // allocator.
    let rc = unsafe {
        conveyor_spm_train(
            args.as_ptr() as *const c_char,
            args.len(),
            seed,
            if verbose { 0 } else { 1 },
            next_sentence,
            corpus as *mut Sentences as *mut c_void,
            &mut model,
            &mut model_len,
            &mut error,
        )
    };
    // SAFETY: non-null buffers come from the shim (malloc, NUL-terminated) and are freed once.
    unsafe {
        if rc == 0 && !model.is_null() {
            let bytes = std::slice::from_raw_parts(model as *const u8, model_len).to_vec();
            conveyor_spm_free(model);
            Ok(bytes)
        } else {
            let message = if error.is_null() {
                "the trainer failed without a message".to_string()
            } else {
                let m = CStr::from_ptr(error).to_string_lossy().into_owned();
                conveyor_spm_free(error);
                m
            };
            Err(message)
        }
    }
}
