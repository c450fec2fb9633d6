"""Text prompts for the corpus: our own sentences, template sentences, and the Asterisk prompts.

The sentences are written for phonetic variety (every English phone, many bilabials, open and
rounded vowels, fricatives, pauses at commas). Template sentences multiply them into thousands of
distinct texts. The Asterisk prompts (Debian ``asterisk-core-sounds-en-g722``, one human speaker,
CC-BY-SA-3.0, voice of Allison Smith) are real speech; they are split BY PROMPT into a part that
may join training (at most two thirds) and a held-out test part.
"""
from __future__ import annotations

import gzip
import shutil
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsf_core.audio import MODEL_RATE, AudioError, to_float

SENTENCES: tuple[str, ...] = (
    "Hello robot, please open the big blue box for me.",
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "My mother made me a warm cup of tea.",
    "We will meet again in the morning, maybe at nine.",
    "Bob brought a bottle of milk from the market.",
    "Peter picked a peck of pickled peppers.",
    "Father wants to park the car by the harbor.",
    "Very few people have seen the five valleys.",
    "Who knew the moon would look so blue in June?",
    "Thank you for calling, how may I help you today?",
    "The cat sat on the mat and watched the mouse.",
    "Please bring me my book, my map and my pen.",
    "Oh no, the boat is floating over the open ocean.",
    "I think that three thin thieves thought a thousand thoughts.",
    "Measure the pleasure of leisure in the garage.",
    "The judge urged the jury to reach a verdict.",
    "Cheap chips and cheese are a child's choice.",
    "Young yellow yaks yawn in the yard.",
    "Why would a wise owl wait in the woods?",
    "Ring the bell when the long song ends.",
    "Good luck, look at the book on the hook.",
    "Put the pot of hot soup on top of the stove.",
    "A bad bat bit a big black bear.",
    "My brother bought a bike for his birthday.",
    "Maybe it's time to move, but where would we go?",
    "Every evening the family eats dinner together.",
    "The airport was busy, with people rushing everywhere.",
    "Open your mouth wide and say ah.",
    "Boil the water, then pour it over the leaves.",
    "How about a walk around the town?",
    "The weather forecast promises rain tomorrow afternoon.",
    "Mom and dad bought a map of Mumbai.",
    "Please remember to lock the back door.",
    "The museum opens at ten and closes at five.",
    "Of all the foods, I like apples the most.",
    "Zebras and lions roam across the plains.",
    "Could you repeat that a little more slowly?",
    "I am sorry, but the number you dialed is not available.",
    "Nobody knows how many marbles are in the jar.",
    "The baby bumped her head on the table, but she was fine.",
    "We often visit our friends in the village.",
    "Fish fry in the pan while the potatoes bake.",
    "Move the mirror a bit to the left, please.",
    "Her voice was soft, almost a whisper.",
    "Large waves broke against the rocks below.",
    "The teacher asked the students to be quiet.",
    "Bring the broom, the mop and a bucket of water.",
    "Is this the way to the train station?",
    "A warm breeze moved through the palm trees.",
    "I could hear music playing far away.",
    "Our plane leaves at half past seven.",
    "The puppy pulled the blanket off the bed.",
    "What a wonderful world it would be.",
    "Choose the shoes that match your jacket.",
    "The mayor made a promise to build more homes.",
    "He hummed a happy tune as he worked.",
    "Vivid violet flowers grew by the fence.",
    "Think before you speak, and speak with care.",
    "Boats bob up and down in the bay.",
    "The old man smiled and waved goodbye.",
    "All of a sudden the lights went out.",
    "Eat your peas, they are good for you.",
    "A book about birds was on the bottom shelf.",
    "Mark my words, the market will bounce back.",
    "Pause for a moment, then begin again.",
    "Umbrellas bloom on the street when it rains.",
    "Thousands of bees buzzed around the hive.",
    "My phone battery is almost empty.",
    "Press the button, wait for the beep, then speak.",
    "The blue balloon floated above the playground.",
    "Good morning, everybody, and welcome back.",
    "Amazing, we finished the whole puzzle in an hour!",
    "Please hold, your call is important to us.",
    "Mix the flour, the butter and the sugar in a bowl.",
    "Of course, I would be happy to help.",
    "Robots may move, but they cannot dream.",
    "The boy threw the ball over the wall.",
    "Leave the window open, the room is warm.",
    "A wave of applause filled the room.",
)

# Template sentences: subject + verb phrase + object + place. Every combination is a distinct text.
_SUBJECTS = ("The bishop", "My brother", "A woman", "Our neighbour", "The pilot", "My mother", "The boy",
             "A farmer", "The old man", "Bob", "Mary", "The baby", "Every player", "A musician",
             "The mayor", "Your father", "The robot", "A happy dog", "The pupil", "Pam")
_VERBS = ("bought", "found", "moved", "painted", "opened", "wanted", "brought", "watched", "fixed",
          "threw", "pushed", "measured", "borrowed", "loved", "chose", "lost", "dropped", "baked",
          "pulled", "showed")
_OBJECTS = ("a blue umbrella", "the broken mirror", "five apples", "a map of the moon", "the wooden boat",
            "a warm blanket", "my old bike", "a box of matches", "the yellow balloon", "a cup of coffee",
            "the purple flowers", "a heavy bag", "the morning paper", "a bowl of soup", "the small puppy",
            "an orange pumpkin", "three maps", "the violin", "a jar of honey", "the shiny key")
_PLACES = ("in the market", "by the harbour", "at the museum", "on the bus", "near the beach",
           "behind the barn", "before breakfast", "after the movie", "in the bathroom", "at midnight",
           "on Monday morning", "under the bridge", "by the pool", "in the park", "at the airport")


def template_sentences(count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct sentences from the templates (count <= 120000)."""
    n = len(_SUBJECTS) * len(_VERBS) * len(_OBJECTS) * len(_PLACES)
    if count > n:
        raise ValueError(f"only {n} template sentences exist, asked for {count}")
    out = []
    for k in rng.choice(n, size=count, replace=False):
        k, p = divmod(int(k), len(_PLACES))
        k, o = divmod(k, len(_OBJECTS))
        s, v = divmod(k, len(_VERBS))
        sep = ", " if (s + v) % 3 == 0 else " "
        out.append(f"{_SUBJECTS[s]} {_VERBS[v]} {_OBJECTS[o]}{sep}{_PLACES[p]}.")
    return out


# --- Asterisk prompts (real speech) -------------------------------------------------------------
ASTERISK_APT = ("asterisk-core-sounds-en-g722", "asterisk-core-sounds-en")
ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TEXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
ASTERISK_SPEAKER = "asterisk:allison"


@dataclass(frozen=True)
class Prompt:
    name: str       # e.g. "digits/5", "vm-goodbye"
    text: str
    path: Path      # the .g722 file


def ensure_asterisk() -> None:
    """Install the Asterisk prompts with apt when they are missing (needs root or sudo)."""
    if ASTERISK_SOUNDS.is_dir() and ASTERISK_TEXT.exists():
        return
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"{ASTERISK_SOUNDS} is missing and apt-get is not available to install "
                           f"{' '.join(ASTERISK_APT)}")
    sudo = [] if Path("/proc/self").stat().st_uid == 0 or shutil.which("sudo") is None else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *ASTERISK_APT],
                   check=True, env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def asterisk_prompts(sounds: Path = ASTERISK_SOUNDS, transcripts: Path = ASTERISK_TEXT) -> list[Prompt]:
    """Prompts that have both audio and a spoken transcript (stage directions like [beep], <beep>,
    (1 second of silence) skipped)."""
    out = []
    with gzip.open(transcripts, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(";") or ":" not in line:
                continue
            name, text = (x.strip() for x in line.split(":", 1))
            path = sounds / f"{name}.g722"
            if text and not text.startswith(("[", "<", "(")) and path.exists():
                out.append(Prompt(name, text, path))
    return out


def decode_g722(path: Path) -> np.ndarray:
    """G.722 file -> 16 kHz mono float32 (ffmpeg)."""
    res = subprocess.run(["ffmpeg", "-v", "error", "-f", "g722", "-i", str(path), "-ar", str(MODEL_RATE),
                          "-ac", "1", "-f", "s16le", "-"], capture_output=True, timeout=60)
    if res.returncode != 0:
        raise AudioError(f"{path}: ffmpeg could not decode G.722: {res.stderr.decode()[:200]}")
    return to_float(np.frombuffer(res.stdout, "<i2"), str(path))


def split_prompts(prompts: list[Prompt], seed: int, train_fraction: float = 2 / 3) -> tuple[list, list]:
    """Split BY PROMPT name, stable under the seed: (train part, held-out test part).

    Prompts are ordered by a seeded hash of their name and the first floor(n * train_fraction) train,
    so the training part never exceeds the fraction.
    """
    if not 0.0 <= train_fraction <= 2 / 3 + 1e-9:
        raise ValueError(f"train_fraction must be within [0, 2/3], got {train_fraction}")
    ranked = sorted(prompts, key=lambda p: (zlib.crc32(f"{seed}:{p.name}".encode()), p.name))
    n_train = int(len(ranked) * train_fraction + 1e-9)
    order = {p.name: i for i, p in enumerate(prompts)}
    train = sorted(ranked[:n_train], key=lambda p: order[p.name])
    test = sorted(ranked[n_train:], key=lambda p: order[p.name])
    return train, test
