"""Ablations behind the "Choosing the defaults" table of docs/measurements.md (model selection, not product code).

python scripts/ablations.py --data-dir DIR --name NAME --seeds 42,43,44 [options]   (one JSON line per seed, then the mean)

Trains variants of the char-CNN in-process on --data-dir DIR (its labels.txt; --tags also
normalizes aliases with tags.json), on the same split as `tagging train`, and reports validation
weighted F1 (best epoch, global threshold) and test weighted F1 with per-class thresholds
(``test_pc``), one global threshold (``test_g``) and the CV-chosen policy (``test_pol``). It keeps
ideas that did not make it into the product (mean pooling, word dropout, crops, character noise,
EMA, label smoothing, distillation from TF-IDF, auxiliary outputs for the other tags, rows
without a label-space tag as negatives) next to the ones that did (cosine schedule,
concatenation, alias examples), so each row of the table can be rerun. ``--save PREFIX`` keeps
each seed's validation/test probabilities (``PREFIX_<seed>.npz``) for ensembles.
"""
import argparse, json, os, pickle, re, sys, tempfile, time, copy
from pathlib import Path
import numpy as np
import torch, torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tagging.config import load_config
from tagging.local import prepare_local
from tagging.metrics import evaluate, weighted_f1
from tagging.thresholds import apply_thresholds, fit_thresholds, fit_global_threshold, select_policy
from tagging.batching import bucket_order, encode_batch
from tagging.training import make_loss
from tagging.vocab import CharVocab, PAD_ID

D = ""  # --data-dir: the folder with projects.json, labels.txt, tags.json (set in main)
CACHE = os.path.join(tempfile.gettempdir(), "tagging-ablations-split.pkl")


def load(tags=False):
    import hashlib

    key = f"{CACHE}.v2.{hashlib.sha1(os.path.abspath(D).encode()).hexdigest()[:8]}" + (".tags" if tags else "")
    if os.path.exists(key):
        return pickle.load(open(key, "rb"))
    over = {"data.labels_file": f"{D}/labels.txt"}
    if tags:
        over["data.tags_file"] = f"{D}/tags.json"
    cfg = load_config(None, over)
    p = prepare_local([f"{D}/projects.json"], cfg)
    out = {}
    for s in ("train", "val", "test"):
        d = p.split(s)
        out[s] = (d["text"].tolist(), np.stack(d["y"].to_numpy()).astype(np.float32))
    # unlabeled in-domain texts: rows without a tag in the label space
    rows = p.rows
    out["labels"] = list(p.labels.labels)
    allrows = prepare_local.__globals__["read_rows_local"]([f"{D}/projects.json"], cfg)[0]
    used = set(rows["id"])
    out["unlabeled"] = [t for i, t in zip(allrows["id"], allrows["text"]) if i not in used]
    from tagging.text import normalize
    out["unlabeled"] = [normalize(t) for t in out["unlabeled"]]
    # raw tags per row (auxiliary targets): train rows in split order, then the unlabeled rows
    tags_of = dict(zip(allrows["id"], allrows["tags"]))
    out["train_tags"] = [list(tags_of[i]) for i in p.split("train")["id"]]
    out["unlabeled_tags"] = [list(t) for i, t in zip(allrows["id"], allrows["tags"]) if i not in used]
    pickle.dump(out, open(key, "wb"))
    return out


class Net(nn.Module):
    def __init__(self, V, L, emb, nf, widths, hidden, dropout, pool="max", emb_drop=0.0, feat_drop=0.0, hidden_layers=1,
                 word_buckets=0, word_dim=64, wide=False):
        super().__init__()
        self.embedding = nn.Embedding(V, emb, padding_idx=PAD_ID)
        self.wide = wide  # words as a linear path straight to the logits (wide & deep) instead of a feature
        self.words = nn.Embedding(word_buckets + 1, L if wide else word_dim, padding_idx=0) if word_buckets else None
        if self.words is not None and wide:
            nn.init.zeros_(self.words.weight)  # starts as the plain CNN
        self.convs = nn.ModuleList(nn.Conv1d(emb, nf, w) for w in widths)
        self.pads = [((w - 1) // 2, w // 2) for w in widths]
        self.pool = pool
        mult = 2 if pool == "maxmean" else 1
        feats = nf * len(widths) * mult + (word_dim if word_buckets and not wide else 0)
        self.emb_drop = nn.Dropout(emb_drop)
        self.feat_drop = nn.Dropout(feat_drop)
        if hidden > 0:
            self.fc1 = nn.Linear(feats, hidden)
            self.fc2 = nn.Linear(hidden, L)
        else:
            self.fc1 = None
            self.fc2 = nn.Linear(feats, L)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids, wids=None):
        mask = (ids != PAD_ID).unsqueeze(1).float()
        x = self.emb_drop(self.embedding(ids)).transpose(1, 2)
        pooled = []
        n = mask.sum(-1).clamp(min=1)
        for conv, pad in zip(self.convs, self.pads):
            z = F.relu(conv(F.pad(x, pad))) * mask
            pooled.append(z.amax(-1))
            if self.pool == "maxmean":
                pooled.append(z.sum(-1) / n)
        bag = None
        if self.words is not None:
            wm = (wids != 0).unsqueeze(-1).float()
            n_words = wm.sum(1).clamp(min=1)
            bag = (self.words(wids) * wm).sum(1) / (n_words.sqrt() if self.wide else n_words)
            if not self.wide:
                pooled.append(bag)
        h = self.feat_drop(torch.cat(pooled, 1))
        if self.fc1 is not None:
            h = self.dropout(F.relu(self.fc1(h)))
        return self.fc2(h) + (bag if self.wide else 0)


def augment(text, rng, word_drop, char_noise, crop):
    if word_drop > 0:
        ws = text.split(" ")
        keep = [w for w in ws if rng.random() >= word_drop]
        text = " ".join(keep) if keep else text
    if crop > 0 and rng.random() < crop and len(text) > 40:
        # keep a random contiguous window of 60-100% of the text
        frac = rng.uniform(0.6, 1.0)
        n = max(20, int(len(text) * frac))
        s = rng.integers(0, len(text) - n + 1)
        text = text[s:s + n]
    if char_noise > 0:
        cs = list(text)
        out = []
        for c in cs:
            r = rng.random()
            if r < char_noise / 3:
                continue  # delete
            elif r < 2 * char_noise / 3:
                out.append(c); out.append(c)  # duplicate
            elif r < char_noise:
                out.append(cs[rng.integers(len(cs))])  # substitute
            else:
                out.append(c)
        text = "".join(out)
    return text


_ALIAS = None
def alias_examples(data, rng):
    global _ALIAS
    if _ALIAS is None:
        from tagging.labels import TagIndex
        idx = TagIndex.from_records(json.load(open(f"{D}/tags.json")))
        L = data["labels"]; pos = {l: i for i, l in enumerate(L)}
        recs = json.load(open(f"{D}/tags.json"))
        items = []
        for r in recs:
            tags = set(idx.canonical([r["tag"]], expand_parents=True))
            y = np.zeros(len(L), np.float32)
            for t in tags:
                if t in pos: y[pos[t]] = 1
            if y.sum() == 0: continue
            forms = [r["tag"].replace("-", " ")] + list(r.get("aliases") or [])
            items.append((forms, y))
        _ALIAS = items
    out_t, out_y = [], []
    for forms, y in _ALIAS:
        f = forms[rng.integers(len(forms))].lower()
        out_t.append(f); out_y.append(y)
    return out_t, np.stack(out_y)


WORD_BUCKETS = 0
def word_ids(texts, maxw=256):
    if not WORD_BUCKETS:
        return None
    from sklearn.utils import murmurhash3_32
    rows = []
    for t in texts:
        w = re.findall(r"\w+", t)
        toks = w + [a + " " + b for a, b in zip(w, w[1:])]
        rows.append([murmurhash3_32(x, seed=0, positive=True) % WORD_BUCKETS + 1 for x in toks[:maxw]] or [0])
    n = max(len(r) for r in rows)
    out = np.zeros((len(rows), n), np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return torch.from_numpy(out)


def asl_loss(logits, y, gamma_neg=4.0, gamma_pos=0.0, clip=0.05):
    p = torch.sigmoid(logits)
    pn = (p - clip).clamp(min=0) if clip else p
    lp = y * torch.log(p.clamp(min=1e-8)) * (1 - p) ** gamma_pos
    ln = (1 - y) * torch.log((1 - pn).clamp(min=1e-8)) * pn ** gamma_neg
    return -(lp + ln).sum(1).mean()


def predict(model, texts, vocab, maxlen, bs=256):
    model.eval()
    lengths = np.array([len(t) for t in texts])
    out = np.zeros((len(texts), model.fc2.out_features), np.float32)
    with torch.no_grad():
        for idx in bucket_order(lengths, bs, None):
            ids = encode_batch([texts[i] for i in idx], vocab, maxlen)
            out[idx] = torch.sigmoid(model(ids, word_ids([texts[i] for i in idx]))).numpy()
    return out


def teacher_probs(data, texts_list):
    from tagging.baselines import make_vectorizer
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import LinearSVC
    tr_t, tr_y = data["train"]
    vec = make_vectorizer()
    xt = vec.fit_transform(tr_t)
    m = OneVsRestClassifier(LinearSVC(C=0.3, class_weight="balanced")).fit(xt, tr_y.astype(int))
    return [1 / (1 + np.exp(-2 * m.decision_function(vec.transform(t)))) for t in texts_list]


def run(args, seed):
    data = load(args.tags)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    (tt, yt), (vt, yv), (et, ye) = data["train"], data["val"], data["test"]
    tags_tr = list(data["train_tags"])
    if args.untagged:  # rows with no tag in the label space: true all-negative examples
        tt = list(tt) + data["unlabeled"]
        yt = np.concatenate([yt, np.zeros((len(data["unlabeled"]), yt.shape[1]), np.float32)])
        tags_tr = tags_tr + data["unlabeled_tags"]
    if args.trainval:  # refit on train + val (fixed schedule, last epoch; val scores are then in-sample)
        tt = list(tt) + list(vt)
        yt = np.concatenate([yt, yv])
        tags_tr = tags_tr + [[] for _ in vt]
        args.keep_last = True
    aux = np.zeros((len(tt), 0), np.float32)
    if args.aux_min_freq > 0:  # auxiliary outputs: the other tags with enough train rows
        from collections import Counter
        lab = set(data["labels"])
        cnt = Counter(t for ts in tags_tr for t in set(ts) if t not in lab)
        extra = sorted(t for t, c in cnt.items() if c >= args.aux_min_freq)
        col = {t: i for i, t in enumerate(extra)}
        aux = np.zeros((len(tt), len(extra)), np.float32)
        for r, ts in enumerate(tags_tr):
            for t in ts:
                if t in col:
                    aux[r, col[t]] = 1
        print(f"aux tags: {len(extra)}", file=sys.stderr)
    L = yt.shape[1]
    yt_full = np.concatenate([yt, aux], 1)
    vocab = CharVocab.fit(tt)
    widths = tuple(range(1, args.wmax + 1)) if args.widths is None else tuple(int(w) for w in args.widths.split(","))
    model = Net(vocab.size, yt_full.shape[1], args.emb, args.nf, widths, args.hidden, args.dropout, args.pool,
                args.emb_drop, args.feat_drop, word_buckets=args.word_buckets, word_dim=args.word_dim,
                wide=args.wide)
    main_loss = asl_loss if args.imbalance == "asl" else make_loss(yt.sum(0), len(yt), args.imbalance)

    def loss_fn(logits, y):
        out = main_loss(logits[:, :L], y[:, :L])
        if logits.shape[1] > L:
            out = out + args.aux_weight * F.binary_cross_entropy_with_logits(logits[:, L:], y[:, L:])
        return out
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)
    if args.sched == "cosine":
        sched = None
    elif args.sched == "cosep":
        warm = max(1, args.epochs // 10)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [torch.optim.lr_scheduler.LinearLR(opt, 0.1, 1.0, warm),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs - warm)], [warm])
    else:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)
    ema = None
    if args.ema > 0:
        ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema))
    teacher = None
    if args.distill > 0:
        cache = os.path.join(tempfile.gettempdir(), f"tagging-ablations-teacher-{args.tags}.pkl")
        if os.path.exists(cache) and not args.aug_teacher:
            teacher = pickle.load(open(cache, "rb"))
        else:
            teacher = teacher_probs(data, [tt, data["unlabeled"]])
            pickle.dump(teacher, open(cache, "wb"))
    best = (-1, None, -1)
    hist = []
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        texts = [augment(t, rng, args.word_drop, args.char_noise, args.crop) for t in tt] if args.aug else tt
        targets = yt_full
        if teacher is not None:
            soft = teacher[0]
            targets = (1 - args.distill) * yt + args.distill * soft
        pool_t, pool_y = texts, targets
        if args.concat > 0:
            n = len(texts)
            whole, frac = int(args.concat), args.concat - int(args.concat)
            pick = np.concatenate([np.tile(np.arange(n), whole), np.flatnonzero(rng.random(n) < frac)]).astype(int)
            other = rng.integers(0, n, len(pick))
            extra_t = [texts[i] + " " + texts[j] for i, j in zip(pick, other)]
            extra_y = np.maximum(targets[pick], targets[other])
            if args.concat3 > 0:
                third = rng.integers(0, n, len(pick))
                use = rng.random(len(pick)) < args.concat3
                extra_t = [t + " " + texts[k] if u else t for t, k, u in zip(extra_t, third, use)]
                extra_y = np.where(use[:, None], np.maximum(extra_y, targets[third]), extra_y)
            pool_t = list(texts) + extra_t
            pool_y = np.concatenate([targets, extra_y])
        if args.alias_data:
            at, ay = alias_examples(data, rng)
            pool_t = list(pool_t) + at
            pool_y = np.concatenate([pool_y, ay])
        if teacher is not None and args.distill_unl:
            pool_t = list(texts) + data["unlabeled"]
            pool_y = np.concatenate([targets, teacher[1]])
        lengths = np.array([len(t) for t in pool_t])
        bl = bucket_order(lengths, args.bs, rng)
        for bi, idx in enumerate(bl):
            if args.sched == "cosine":
                frac = (epoch + bi / len(bl)) / args.epochs
                lr = args.lr * (frac / 0.1 if frac < 0.1 else 0.5 * (1 + np.cos(np.pi * (frac - 0.1) / 0.9)))
                for g in opt.param_groups: g["lr"] = lr
            ids = encode_batch([pool_t[i] for i in idx], vocab, args.maxlen)
            y = torch.from_numpy(np.asarray(pool_y[idx], np.float32))
            if args.smooth > 0:
                y = y * (1 - args.smooth) + args.smooth / 2
            opt.zero_grad()
            loss = loss_fn(model(ids, word_ids([pool_t[i] for i in idx])), y)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
        evm = ema.module if ema is not None else model
        pv = predict(evm, vt, vocab, args.maxlen)[:, :L]
        f1 = weighted_f1(yv, pv >= fit_global_threshold(yv, pv))
        if args.sched == "plateau":
            sched.step(f1)
        elif args.sched == "cosep":
            sched.step()
        hist.append(round(f1, 4))
        if f1 > best[0] + 1e-6:
            best = (f1, copy.deepcopy(evm.state_dict()), epoch)
        elif args.patience and epoch - best[2] >= args.patience:
            break
    final = args.keep_last
    evm = ema.module if ema is not None else model
    if not final:
        evm.load_state_dict(best[1])
    pv = predict(evm, vt, vocab, args.maxlen)[:, :L]
    pe = predict(evm, et, vocab, args.maxlen)[:, :L]
    th, g = fit_thresholds(yv, pv, 5)
    pol = select_policy(yv, pv)
    thp, _ = fit_thresholds(yv, pv, pol["min_support"], pol["shrink"])
    res = {"seed": seed, "best_epoch": best[2], "val_f1": round(best[0], 4),
           "test_pc": round(evaluate(ye, apply_thresholds(pe, th), data["labels"])["overall"]["f1"], 4),
           "test_g": round(weighted_f1(ye, pe >= g), 4),
           "test_pol": round(weighted_f1(ye, apply_thresholds(pe, thp)), 4),
           "secs": round(time.time() - t0), "params": sum(p.numel() for p in evm.parameters())}
    if args.save:
        np.savez(f"{args.save}_{seed}.npz", pv=pv, pe=pe)
    return res, hist


def main():
    global D
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="folder with projects.json, labels.txt, tags.json")
    ap.add_argument("--name", default="x")
    ap.add_argument("--seeds", default="42")
    ap.add_argument("--emb", type=int, default=64)
    ap.add_argument("--nf", type=int, default=96)
    ap.add_argument("--wmax", type=int, default=10)
    ap.add_argument("--widths", default=None)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--emb-drop", type=float, default=0.0)
    ap.add_argument("--feat-drop", type=float, default=0.0)
    ap.add_argument("--pool", default="max")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--wd", type=float, default=0.0)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=0)
    ap.add_argument("--maxlen", type=int, default=512)
    ap.add_argument("--imbalance", default="pos_weight")
    ap.add_argument("--sched", default="plateau")
    ap.add_argument("--ema", type=float, default=0.0)
    ap.add_argument("--smooth", type=float, default=0.0)
    ap.add_argument("--aug", action="store_true")
    ap.add_argument("--word-drop", type=float, default=0.0)
    ap.add_argument("--char-noise", type=float, default=0.0)
    ap.add_argument("--crop", type=float, default=0.0)
    ap.add_argument("--distill", type=float, default=0.0)
    ap.add_argument("--distill-unl", action="store_true")
    ap.add_argument("--aug-teacher", action="store_true")
    ap.add_argument("--tags", action="store_true")
    ap.add_argument("--concat", type=float, default=0.0)
    ap.add_argument("--concat3", type=float, default=0.0)
    ap.add_argument("--alias-data", action="store_true")
    ap.add_argument("--untagged", action="store_true", help="train also on rows with no tag in the label space (all-negative)")
    ap.add_argument("--aux-min-freq", type=int, default=0, help="auxiliary outputs for other tags with >= N train rows")
    ap.add_argument("--aux-weight", type=float, default=1.0)
    ap.add_argument("--keep-last", action="store_true")
    ap.add_argument("--trainval", action="store_true", help="train on train + val, keep the last epoch")
    ap.add_argument("--save", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--word-buckets", type=int, default=0, help="hashed word uni+bigram branch (buckets; 0 = off)")
    ap.add_argument("--word-dim", type=int, default=64)
    ap.add_argument("--wide", action="store_true", help="the word branch adds to the logits (linear, wide & deep)")
    a = ap.parse_args()
    global WORD_BUCKETS
    WORD_BUCKETS = a.word_buckets
    D = a.data_dir
    torch.set_num_threads(a.threads)
    rs = []
    for s in a.seeds.split(","):
        r, h = run(a, int(s))
        rs.append(r)
        print(json.dumps({"name": a.name, **r, "hist": h}), flush=True)
    if len(rs) > 1:
        m = {k: round(float(np.mean([r[k] for r in rs])), 4) for k in ("val_f1", "test_pc", "test_g", "test_pol")}
        print(json.dumps({"name": a.name, "MEAN": m}), flush=True)


if __name__ == "__main__":
    main()
