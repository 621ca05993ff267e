import pickle, io, numpy as np, sys, warnings
warnings.simplefilter("ignore")
from sklearn.ensemble import *
from sklearn.tree import *
from sklearn.neighbors import LocalOutlierFactor
from sklearn.covariance import EllipticEnvelope
from sklearn.linear_model import *
from sklearn.svm import *
from sklearn.preprocessing import *
from sklearn.impute import SimpleImputer
from sklearn.decomposition import PCA
class Rec(pickle.Unpickler):
    def find_class(self, m, n):
        G.add(m+"."+n); return super().find_class(m,n)
rng=np.random.RandomState(0); X=rng.randn(200,3); yr=X[:,0]*2+rng.randn(200)*.1; yc=(X[:,0]>0).astype(int); y3=np.digitize(X[:,0],[-0.5,0.5])
ys=np.array(["a","b","c"])[y3]
def desc(v):
    t=type(v).__name__
    if isinstance(v,np.ndarray): return f"{t} {v.dtype} {v.shape}"
    if isinstance(v,(list,tuple)) and len(v): 
        x=v[0]; return f"{t} len={len(v)} of "+desc(x)
    return t+" "+repr(v)[:50]
ests={
 "lof": (LocalOutlierFactor(novelty=True,n_neighbors=5),None),
 "ee": (EllipticEnvelope(random_state=0),None),
 "sgdocsvm": (SGDOneClassSVM(random_state=0),None),
 "dtr": (DecisionTreeRegressor(max_depth=3),yr),
 "dtc": (DecisionTreeClassifier(max_depth=3),ys),
 "rfr": (RandomForestRegressor(n_estimators=2,max_depth=3),yr),
 "rfc": (RandomForestClassifier(n_estimators=2,max_depth=3),y3),
 "gbr": (GradientBoostingRegressor(n_estimators=2,max_depth=2),yr),
 "gbc": (GradientBoostingClassifier(n_estimators=2,max_depth=2),y3),
 "gbc2": (GradientBoostingClassifier(n_estimators=2,max_depth=2),yc),
 "hgbr": (HistGradientBoostingRegressor(max_iter=2),yr),
 "hgbc": (HistGradientBoostingClassifier(max_iter=2),y3),
 "lr": (LinearRegression(),yr), "ridge":(Ridge(),yr), "logreg":(LogisticRegression(),y3),
 "sgdc": (SGDClassifier(),yc), "lsvc": (LinearSVC(),yc), "svc": (SVC(),y3), "svr": (SVR(),yr),
 "qt": (QuantileTransformer(n_quantiles=50),None), "pt": (PowerTransformer(),None), "poly": (PolynomialFeatures(2),None),
 "imp": (SimpleImputer(strategy="median"),None), "pca": (PCA(whiten=True),None),
}
only=sys.argv[1:] or list(ests)
for name in only:
    est,y=ests[name]
    est.fit(X) if y is None else est.fit(X,y)
    print("=====",name,type(est).__module__)
    for k,v in sorted(est.__dict__.items()):
        if k in ("estimators_",) and name.startswith("gb"): print(" ",k,":",desc(v), v.shape if hasattr(v,'shape') else ""); continue
        print(" ",k,":",desc(v))
    G=set(); Rec(io.BytesIO(pickle.dumps(est,protocol=4))).load()
    print("  GLOBALS:",sorted(G))
