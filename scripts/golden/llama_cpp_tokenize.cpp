// Token ids llama.cpp gives texts, from a GGUF vocabulary: the reference for what its test
// vectors do not cover (special tokens in the text, BOS/EOS on a prompt).
//
// Usage: llama_cpp_tokenize VOCAB.gguf TEXTS.json > IDS.json
// TEXTS.json is a JSON array of strings; IDS.json holds "end_of_generation" (the ids llama.cpp
// stops generating at) and "cases", one per text:
// {"text", "ids" (parse_special), "ids_plain" (no parse_special), "ids_prompt" (add_special)}.
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "llama.h"

static std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text,
                                         bool add_special, bool parse_special) {
    std::vector<llama_token> ids(text.size() + 8);
    int n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), ids.data(), (int32_t) ids.size(),
                           add_special, parse_special);
    if (n < 0) {
        ids.resize(-n);
        n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), ids.data(), (int32_t) ids.size(),
                           add_special, parse_special);
    }
    ids.resize(n);
    return ids;
}

int main(int argc, char ** argv) {
    if (argc != 3) {
        std::cerr << "usage: " << argv[0] << " VOCAB.gguf TEXTS.json\n";
        return 2;
    }
    llama_backend_init();
    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_model_params params = llama_model_default_params();
    params.vocab_only = true;
    llama_model * model = llama_model_load_from_file(argv[1], params);
    if (model == nullptr) {
        std::cerr << argv[1] << ": llama.cpp could not load the vocabulary\n";
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    std::ifstream in(argv[2]);
    const nlohmann::json texts = nlohmann::json::parse(in);
    nlohmann::json eog = nlohmann::json::array();
    for (llama_token id = 0; id < llama_vocab_n_tokens(vocab); id++) {
        if (llama_vocab_is_eog(vocab, id)) {
            eog.push_back(id);
        }
    }
    nlohmann::json cases = nlohmann::json::array();
    for (const auto & t : texts) {
        const std::string text = t.get<std::string>();
        cases.push_back({
            {"text", text},
            {"ids", tokenize(vocab, text, false, true)},
            {"ids_plain", tokenize(vocab, text, false, false)},
            {"ids_prompt", tokenize(vocab, text, true, true)},
        });
    }
    const nlohmann::json out = {{"end_of_generation", eog}, {"cases", cases}};
    std::cout << out.dump(1) << "\n";
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
