"""jieba's precise mode with HMM, word for word, in about half of jieba's time.

`jieba.Tokenizer.cut` spends most of its time in two passes over every block of Han text: `get_DAG` lists the
dictionary words starting at each character, then `calc` picks the most probable route backwards, calling
`log` for every candidate. Here both passes are one backward loop over a table of log probabilities computed
once per tokenizer, and the HMM that joins runs of unknown single characters (jieba.finalseg's model) runs
once per distinct run, its viterbi keeping back pointers instead of copying every path at every step.
The dictionary, the regexes, the HMM and the arithmetic are jieba's own, in the same order, so the words are
the same as `Tokenizer.lcut(text, HMM=True)`: tests compare both on the shared data.
"""

from __future__ import annotations

from math import log

import jieba
from jieba import finalseg

_BLOCK = jieba.re_han_default  # runs of Han, ASCII letters and digits: the blocks the route is computed on
_SKIP = jieba.re_skip_default  # between blocks: line breaks and whitespace are tokens, anything else a char
_MAX_CACHED_RUNS = 1 << 17
_ABSENT = object()  # not even a prefix of a dictionary word: the scan for longer words stops
_HMM_BLOCK = finalseg.re_han  # what the HMM tags: Han runs
_HMM_SKIP = finalseg.re_skip
_TAGS = "BMES"
_PREVIOUS = finalseg.PrevStatus  # the two tags that may precede each tag
_MIN_FLOAT = finalseg.MIN_FLOAT


class PreciseCutter:
    """Words of a text as `tokenizer.lcut(text, HMM=True)` gives them."""

    def __init__(self, tokenizer: jieba.Tokenizer) -> None:
        tokenizer.check_initialized()
        self.freq = tokenizer.FREQ
        log_total = log(tokenizer.total)
        # jieba scores a word as log(freq) - log(total) and a character outside the dictionary as
        # log(1) - log(total). The dictionary also holds every prefix of a word, with frequency 0: those
        # continue the scan for longer words but are no candidates themselves (None here).
        self.log_prob = {word: log(count) - log_total if count else None for word, count in self.freq.items()}
        self.unknown_log_prob = log(1) - log_total
        self._hmm_runs: dict[str, list[str]] = {}

    def cut(self, text: str) -> list[str]:
        words: list[str] = []
        # split() on the pattern's one group alternates: text between blocks at even positions, blocks at odd
        for position, block in enumerate(_BLOCK.split(text)):
            if position % 2:
                self._cut_block(block, words)
            elif len(block) == 1:
                words.append(block)  # one character, whitespace or not, is one token
            elif block:
                for part in _SKIP.split(block):
                    if _SKIP.match(part):
                        words.append(part)
                    else:
                        words.extend(part)
        return words

    def _route(self, block: str) -> list[int]:
        """For each start position, the end (exclusive) of the word the best route takes there.

        jieba's calc: route[k] = max((log_prob(block[k:x+1]) + score[x+1], x) for x in DAG[k]), so among equal
        scores the longest word wins; DAG[k] holds the ends of dictionary words (count > 0) starting at k,
        or k alone when there is none.
        """
        n = len(block)
        log_prob = self.log_prob.get
        score = [0.0] * (n + 1)
        ends = [0] * n
        for k in range(n - 1, -1, -1):
            best_score, best_end = 0.0, -1
            i, fragment = k, block[k]
            while (word_log_prob := log_prob(fragment, _ABSENT)) is not _ABSENT:
                if word_log_prob is not None:
                    candidate = word_log_prob + score[i + 1]
                    if best_end < 0 or candidate >= best_score:
                        best_score, best_end = candidate, i
                i += 1
                if i >= n:
                    break
                fragment = block[k : i + 1]
            if best_end < 0:
                best_score, best_end = self.unknown_log_prob + score[k + 1], k
            score[k], ends[k] = best_score, best_end + 1
        return ends

    def _cut_block(self, block: str, words: list[str]) -> None:
        ends = self._route(block)
        start, n, run = 0, len(block), ""
        while start < n:
            end = ends[start]
            if end - start == 1:
                run += block[start]
            else:
                if run:
                    self._flush_run(run, words)
                    run = ""
                words.append(block[start:end])
            start = end
        if run:
            self._flush_run(run, words)

    def _flush_run(self, run: str, words: list[str]) -> None:
        """Single characters in a row: one word, the HMM's words when the run is no dictionary word, else chars."""
        if len(run) == 1:
            words.append(run)
        elif not self.freq.get(run):
            words.extend(self._hmm(run))
        else:
            words.extend(run)

    def _hmm(self, run: str) -> list[str]:
        found = self._hmm_runs.get(run)
        if found is None:
            if len(self._hmm_runs) >= _MAX_CACHED_RUNS:
                self._hmm_runs.clear()
            found = self._hmm_runs[run] = hmm_cut(run)
        return found


def hmm_cut(text: str) -> list[str]:
    """jieba.finalseg.cut: Han runs by the BMES HMM, letters and numbers kept whole, the rest as it is."""
    words: list[str] = []
    for block in _HMM_BLOCK.split(text):
        if _HMM_BLOCK.match(block):
            for word in _hmm_words(block):
                if word in finalseg.Force_Split_Words:
                    words.extend(word)
                else:
                    words.append(word)
        else:
            words.extend(part for part in _HMM_SKIP.split(block) if part)
    return words


def _hmm_words(text: str) -> list[str]:
    """Words of a Han run from its most probable BMES tags (finalseg's viterbi and its reading of the tags)."""
    tags = _viterbi(text)
    words: list[str] = []
    begin = next_start = 0
    for i, tag in enumerate(tags):
        if tag == "B":
            begin = i
        elif tag == "E":
            words.append(text[begin : i + 1])
            next_start = i + 1
        elif tag == "S":
            words.append(text[i])
            next_start = i + 1
    if next_start < len(text):
        words.append(text[next_start:])
    return words


def _viterbi(text: str) -> list[str]:
    """finalseg.viterbi with back pointers instead of copied paths; the same sums in the same order, and
    ties broken the same way (max over (probability, previous tag) tuples)."""
    emit, trans = finalseg.emit_P, finalseg.trans_P
    scores = {tag: finalseg.start_P[tag] + emit[tag].get(text[0], _MIN_FLOAT) for tag in _TAGS}
    pointers: list[dict[str, str]] = []
    for char in text[1:]:
        step_scores, step_pointers = {}, {}
        for tag in _TAGS:
            emission = emit[tag].get(char, _MIN_FLOAT)
            first, second = _PREVIOUS[tag]
            via_first = scores[first] + trans[first].get(tag, _MIN_FLOAT) + emission
            via_second = scores[second] + trans[second].get(tag, _MIN_FLOAT) + emission
            if (via_first, first) > (via_second, second):
                step_scores[tag], step_pointers[tag] = via_first, first
            else:
                step_scores[tag], step_pointers[tag] = via_second, second
        scores = step_scores
        pointers.append(step_pointers)
    tag = max((scores[tag], tag) for tag in "ES")[1]
    tags = [tag]
    for step_pointers in reversed(pointers):
        tag = step_pointers[tag]
        tags.append(tag)
    return tags[::-1]
