import numpy as np, math, warnings
from sklearn.ensemble import IsolationForest
rng=np.random.RandomState(1)
tot=0; flips=0; zeros=0; maxd=0; biteq=0; n=0
for seed in range(6):
  for nf in (1,3):
    X=rng.randn(1000,nf).round(2)
    m=IsolationForest(n_estimators=100, contamination=0.05, random_state=seed).fit(X)
    T=np.vstack([X[:300], rng.randn(300,nf).round(2)])
    dec=m.decision_function(T); pred=m.predict(T)
    zeros+=np.count_nonzero(dec==0)
    # reimplement
    Xf=T.astype(np.float32)
    depths=np.zeros(len(T))
    for t,(tree,feat) in enumerate(zip(m.estimators_,m.estimators_features_)):
        leaves=tree.apply(Xf[:,feat] if m._max_features!=nf else Xf)
        depths += m._decision_path_lengths[t][leaves] + m._average_path_length_per_tree[t][leaves] - 1.0
    ms=m._max_samples
    c=2.0*(math.log(ms-1.0)+np.euler_gamma)-2.0*(ms-1.0)/ms
    den=len(m.estimators_)*c
    score=-(2**(-(depths/den)))
    mydec=score-m.offset_
    mypred=np.where(mydec<0,-1,1)
    flips+=np.count_nonzero(mypred!=pred); n+=len(T); biteq+=np.count_nonzero(mydec==dec)
    maxd=max(maxd, np.max(np.abs(mydec-dec)))
print("rows",n,"exact-zero decisions",zeros,"label flips with glibc pow",flips,"bit-equal",biteq,"maxdiff",maxd)
