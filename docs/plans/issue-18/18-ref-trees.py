import numpy as np, warnings
warnings.simplefilter("ignore")
from sklearn.ensemble import RandomForestRegressor, RandomForestClassifier, GradientBoostingRegressor, HistGradientBoostingRegressor
rng=np.random.default_rng(4)
def walk(tree, x32):
    n=0; L=tree.children_left; R=tree.children_right; F=tree.feature; T=tree.threshold
    while L[n]!=-1:
        v=float(x32[F[n]])
        if np.isnan(v): n = L[n] if tree.missing_go_to_left[n] else R[n]
        elif v<=T[n]: n=L[n]
        else: n=R[n]
    return n
for d in (1,3):
    X=np.round(rng.standard_normal((500,d)),2); y=X[:,0]*3+np.round(rng.standard_normal(500),1); yc=np.digitize(y,[-1,1])
    T=np.vstack([X[:100], rng.standard_normal((200,d))])
    rf=RandomForestRegressor(n_estimators=20,random_state=0).fit(X,y); p=rf.predict(T)
    mine=[]
    for x in T:
        x32=x.astype(np.float32); s=0.0
        for e in rf.estimators_: s+=e.tree_.value[walk(e.tree_,x32)][0][0]
        mine.append(s/len(rf.estimators_))
    print(d,"RFR mismatches",np.count_nonzero(np.array(mine)!=p))
    rc=RandomForestClassifier(n_estimators=20,random_state=0).fit(X,yc); pp=rc.predict_proba(T)
    mine=[]
    for x in T:
        x32=x.astype(np.float32); s=np.zeros(3)
        for e in rc.estimators_: s=s+e.tree_.value[walk(e.tree_,x32)][0][:3]
        mine.append(s/len(rc.estimators_))
    print(d,"RFC proba mismatches",np.count_nonzero(np.array(mine)!=pp))
    gb=GradientBoostingRegressor(n_estimators=30,random_state=0).fit(X,y); p=gb.predict(T)
    mine=[]
    for x in T:
        x32=x.astype(np.float32); s=float(gb.init_.constant_.ravel()[0])
        for e in gb.estimators_[:,0]: s=s+gb.learning_rate*e.tree_.value[walk(e.tree_,x32)][0][0]
        mine.append(s)
    print(d,"GBR mismatches",np.count_nonzero(np.array(mine)!=p))
    h=HistGradientBoostingRegressor(max_iter=30).fit(X,y); p=h.predict(T)
    mine=[]
    for x in T:
        s=float(h._baseline_prediction.ravel()[0])
        for it in h._predictors:
            nodes=it[0].nodes; n=0
            while not nodes[n]['is_leaf']:
                v=x[nodes[n]['feature_idx']]
                n = nodes[n]['left'] if (np.isnan(v) and nodes[n]['missing_go_to_left']) or (not np.isnan(v) and v<=nodes[n]['num_threshold']) else nodes[n]['right']
            s=s+nodes[n]['value']
        mine.append(s)
    print(d,"HGBR mismatches",np.count_nonzero(np.array(mine)!=p))
