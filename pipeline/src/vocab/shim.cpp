// conveyor's bridge to the SentencePiece trainer (the sources vendored by sentencepiece-sys):
// trains from sentences that Rust hands over one at a time through a callback, and returns
// the serialised model, so no temporary text file and no external program are needed.

#include <cstdlib>
#include <cstring>
#include <string>

#include "sentencepiece_processor.h"
#include "sentencepiece_trainer.h"

extern "C" {
// Fills `data`/`len` with the next sentence and returns 1, or returns 0 at the end; a
// negative value means the reader failed (its message is kept on the Rust side).
typedef int (*conveyor_next_sentence)(void *ctx, const char **data, size_t *len);
}

namespace {

class CallbackIterator : public sentencepiece::SentenceIterator {
 public:
  CallbackIterator(conveyor_next_sentence next, void *ctx) : next_(next), ctx_(ctx) {
    Fetch();
  }
  bool done() const override { return done_; }
  void Next() override { Fetch(); }
  const std::string &value() const override { return value_; }
  sentencepiece::util::Status status() const override {
    if (failed_) {
      return sentencepiece::util::Status(sentencepiece::util::StatusCode::kInternal,
                                         "reading the training corpus failed");
    }
    return sentencepiece::util::Status();
  }

 private:
  void Fetch() {
    const char *data = nullptr;
    size_t len = 0;
    int r = next_(ctx_, &data, &len);
    if (r > 0) {
      value_.assign(data, len);
    } else {
      done_ = true;
      failed_ = r < 0;
      value_.clear();
    }
  }

  conveyor_next_sentence next_;
  void *ctx_;
  std::string value_;
  bool done_ = false;
  bool failed_ = false;
};

char *copy_out(const std::string &s, size_t *len) {
  char *p = static_cast<char *>(std::malloc(s.size() + 1));
  if (p == nullptr) return nullptr;
  std::memcpy(p, s.data(), s.size());
  p[s.size()] = '\0';
  if (len != nullptr) *len = s.size();
  return p;
}

}  // namespace

extern "C" {

// Trains a model with the trainer flags in `args` ("--vocab_size=8000 --model_type=unigram
// ..."), logging at `min_log_level` and above (0 = info, 1 = warnings). On success returns 0 and the serialised model in `*model` / `*model_len`; on failure
// returns 1 and the trainer's message in `*error`. Both are freed with conveyor_spm_free.
int conveyor_spm_train(const char *args, size_t args_len, unsigned int seed,
                       int min_log_level, conveyor_next_sentence next, void *ctx,
                       char **model, size_t *model_len, char **error) {
  *model = nullptr;
  *model_len = 0;
  *error = nullptr;
  try {
    sentencepiece::SetRandomGeneratorSeed(seed);
    sentencepiece::SetMinLogLevel(min_log_level);
    // The trainer logs `args.data()` as a C string, so hand it a NUL-terminated copy.
    const std::string flags(args, args_len);
    CallbackIterator it(next, ctx);
    std::string proto;
    auto status = sentencepiece::SentencePieceTrainer::Train(flags, &it, &proto);
    if (!status.ok()) {
      *error = copy_out(status.ToString(), nullptr);
      return 1;
    }
    *model = copy_out(proto, model_len);
    return 0;
  } catch (const std::exception &e) {
    *error = copy_out(std::string("the SentencePiece trainer failed: ") + e.what(), nullptr);
    return 1;
  } catch (...) {
    *error = copy_out("the SentencePiece trainer failed", nullptr);
    return 1;
  }
}

void conveyor_spm_free(char *p) { std::free(p); }

}  // extern "C"
